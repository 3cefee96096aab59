# One device call: per-kernel times (JAX profiler) of the training step with and without the
# fused encoder, and of the fused decoder experiment. Run on a GPU machine from the repo root.
python3 benchmarks/kernel_breakdown.py --kernels pallas
python3 benchmarks/kernel_breakdown.py --kernels xla | head -25
python3 benchmarks/kernel_breakdown.py --what decoder_experiment | head -15
