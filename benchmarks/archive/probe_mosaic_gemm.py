"""Probe: can Mosaic GPU's Hopper matmul (JAX's own ``hopper_matmul_mgpu``, TF32 ``wgmma`` for
float32 operands) run the decoder's layer product, (131,072 x 128) @ (128 x 128) float32, at
cuBLAS's speed or better? The answer decides whether a fused decoder built on Mosaic GPU
could be fast (benchmarks/RESULTS.md, archive). Prints one line per
tuning: median ms over 20 x 50 calls, or why it failed. Needs an H100; fae-lab does not use it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for bench_fused

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from bench_fused import median_ms  # median ms over repeats of inner calls


def main() -> None:
    from jax.experimental.pallas.ops.gpu import hopper_matmul_mgpu as hm

    rows, width = 131072, 128
    ka, kb = jax.random.split(jax.random.key(0))
    for dtype in (jnp.float32, jnp.bfloat16):
        a = jax.random.normal(ka, (rows, width), jnp.float32).astype(dtype)
        b = (jax.random.normal(kb, (width, width), jnp.float32) / np.sqrt(width)).astype(dtype)
        exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
        xla = jax.jit(lambda a, b: a @ b)
        ms = median_ms(xla, (a, b), 20, inner=50)[0]
        err = float(np.max(np.abs(np.asarray(xla(a, b), np.float64) - exact)) / np.max(np.abs(exact)))
        print(f"{jnp.dtype(dtype).name} xla  {ms:.4f} ms  rel err {err:.2e}", flush=True)
        itemsize = jnp.dtype(dtype).itemsize
        for tile_m, tile_n, steps, wg_dim in itertools.product((64, 128), (64, 128), (2, 4),
                                                               (hm.MatmulDimension.M, hm.MatmulDimension.N)):
            tile_k = 128 // itemsize  # one 128-byte swizzle row
            config = hm.TuningConfig(tile_m=tile_m, tile_n=tile_n, tile_k=tile_k, max_concurrent_steps=steps,
                                     epi_tile_n=64, epi_tile_m=64, wg_dimension=wg_dim)
            label = f"{jnp.dtype(dtype).name} mgpu m{tile_m} n{tile_n} k{tile_k} s{steps} wg{wg_dim}"
            try:
                fn = jax.jit(lambda a, b, config=config: hm.matmul(a, b, None, config))
                ms = median_ms(fn, (a, b), 20, inner=50)[0]
                err = float(np.max(np.abs(np.asarray(fn(a, b), np.float64) - exact)) / np.max(np.abs(exact)))
                print(f"{label}  {ms:.4f} ms  rel err {err:.2e}", flush=True)
            except Exception as e:  # a probe: report and go on
                print(f"{label}  failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)


if __name__ == "__main__":
    main()
