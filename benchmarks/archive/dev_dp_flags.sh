# One device call on a two-GPU host (2026-11-26, session 3): the data-parallel step (jax.shard_map,
# one raveled all-reduce) against one GPU, then the one-GPU step under XLA flags not tried before
# (cuDNN GEMM fusions, command buffers off, the block-level rewriter) and scan unrolling. Run from
# the repository root. Its first run also timed the placement by XLA's partitioner that training
# used before (a `--dp gspmd` switch since removed) and a flag this XLA does not know; the printed
# lines are in benchmarks/archive/results/printed_h100_session3.md.
K="python3 benchmarks/kernel_breakdown.py --kernels pallas"
echo "### data parallel, batch 64"
$K --batch 64 --top 3
$K --batch 64 --n-devices 2 --top 8
echo "### one GPU, batch 32, XLA flags"
for f in "" "--xla_gpu_cudnn_gemm_fusion_level=3" "--xla_gpu_enable_command_buffer=" \
         "--xla_gpu_experimental_enable_fusion_block_level_rewriter=true"; do
  echo "## XLA_FLAGS=$f"
  XLA_FLAGS="$f" $K --top 6 2>&1 | grep -v -i warn | tail -8
done
echo "### scan unroll"
$K --unroll 2 --top 3
$K --unroll 5 --top 3
