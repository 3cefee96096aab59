# One device call on a two-GPU host: the batch-64 step's kernels on one GPU and data parallel
# on two (fused encoder), to see what the second GPU's step spends beyond half the work.
python3 benchmarks/kernel_breakdown.py --kernels pallas --batch 64 --top 12
python3 benchmarks/kernel_breakdown.py --kernels pallas --batch 64 --n-devices 2 --top 40
