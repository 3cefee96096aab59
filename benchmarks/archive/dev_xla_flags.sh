# One device call: the training step's kernel time under XLA flags that let Triton GEMMs (with fused
# producers) replace cuBLAS. Run on a GPU machine from the repository root.
for f in "" "--xla_gpu_cublas_fallback=false" "--xla_gpu_triton_gemm_any=true" "--xla_gpu_cublas_fallback=false --xla_gpu_triton_gemm_any=true"; do
  echo "### XLA_FLAGS=$f"
  XLA_FLAGS="$f" python3 benchmarks/kernel_breakdown.py --kernels pallas --top 8 2>&1 | grep -v -i warn
done
