# One device call's worth of bench_fused.py (benchmarks/results/bench_fused_h100x1.md, run 3): the XLA
# decoder and encoder under other XLA flags, the XLA decoder padded to 128 wide, and encoder
# tilings around the fastest. Run on a GPU machine from the repository root.
set -x
B="python3 benchmarks/bench_fused.py --repeats 20"
$B --cases decoder,decoder_padded_xla --tilings "" 2>&1 | grep -v "^{"
for f in "--xla_gpu_enable_cublaslt=true" "--xla_gpu_enable_triton_gemm=false" "--xla_gpu_autotune_level=4" "--xla_gpu_enable_cublaslt=true --xla_gpu_enable_triton_gemm=false"; do
  XLA_FLAGS="$f" $B --cases decoder,decoder_padded_xla,encoder --tilings "" 2>&1 | grep -v "^{"
done
$B --cases encoder --tilings 16:256:4:2,16:128:4:2,16:512:4:2,16:256:2:2,16:256:4:3,32:256:8:2,16:1024:4:2 2>&1 | grep -v "^{"
