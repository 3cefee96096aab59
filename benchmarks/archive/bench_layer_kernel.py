"""Can a Triton-backed Pallas kernel run one decoder layer at the memory rate?

One layer of the paper decoder, z = GELU(x) W + b over 131,072 points: XLA (its GEMM and its
GELU pass) against single Pallas kernels with GELU fused into the product's input, for
several row tiles and warp counts, with the exact tanh or the GPU's approximate one
(``plgpu.approx_tanh``), and with no GELU at all (the bare product). Median ms of 200 calls;
relative error against XLA at the highest precision. Prints one line per variant.
"""

from __future__ import annotations

import functools
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

C = math.sqrt(2 / math.pi)


def gelu(x, tanh=jnp.tanh):
    return 0.5 * x * (1.0 + tanh(C * (x + 0.044715 * x * x * x)))


def kernel(x_ref, w_ref, b_ref, o_ref, *, mode):
    x = x_ref[...]
    if mode == "exact":
        x = gelu(x)
    elif mode == "approx":
        x = gelu(x, plgpu.approx_tanh)
    o_ref[...] = plgpu.dot(x, w_ref[...]) + b_ref[...]


def pallas_layer(x, w, b, *, rows, warps, stages, mode):
    m, k = x.shape
    n = w.shape[1]
    return pl.pallas_call(
        functools.partial(kernel, mode=mode),
        out_shape=jax.ShapeDtypeStruct((m, n), jnp.float32),
        grid=(m // rows,),
        in_specs=[pl.BlockSpec((rows, k), lambda i: (i, 0)), pl.BlockSpec((k, n), lambda i: (0, 0)),
                  pl.BlockSpec((1, n), lambda i: (0, 0))],
        out_specs=pl.BlockSpec((rows, n), lambda i: (i, 0)),
        compiler_params=plgpu.CompilerParams(num_warps=warps, num_stages=stages),
    )(x, w, b.reshape(1, n))


def median_ms(fn, *args, n=200):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n // 5):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / (n // 5) * 1e3)
    return statistics.median(times)


def main():
    rng = np.random.default_rng(0)
    m = 32 * 4096
    for width in (128, 100):
        x = jnp.asarray(rng.normal(size=(m, width)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(width, width)) / math.sqrt(width), jnp.float32)
        b = jnp.asarray(rng.normal(size=width) * 0.1, jnp.float32)
        with jax.default_matmul_precision("highest"):
            exact = jax.jit(lambda x, w, b: gelu(x) @ w + b)(x, w, b)
        xla = jax.jit(lambda x, w, b: jax.nn.gelu(x) @ w + b)
        bare = jax.jit(lambda x, w, b: x @ w + b)
        err = float(jnp.linalg.norm(xla(x, w, b) - exact) / jnp.linalg.norm(exact))
        print(f"width {width}: xla gelu+gemm {median_ms(xla, x, w, b):.4f} ms (err {err:.1e}),"
              f" xla gemm only {median_ms(bare, x, w, b):.4f} ms", flush=True)
        if width != 128:
            continue
        for mode in ("exact", "approx", "none"):
            for rows, warps, stages in ((64, 4, 2), (128, 4, 2), (128, 8, 2), (256, 8, 2), (128, 8, 3)):
                fn = jax.jit(functools.partial(pallas_layer, rows=rows, warps=warps, stages=stages, mode=mode))
                try:
                    out = fn(x, w, b)
                    ref = exact if mode != "none" else jax.jit(lambda x, w, b: x @ w + b)(x, w, b)
                    err = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
                    print(f"  pallas {mode:6s} rows {rows:3d} warps {warps} stages {stages}: "
                          f"{median_ms(fn, x, w, b):.4f} ms (err {err:.1e})", flush=True)
                except Exception as exc:  # a variant the compiler rejects is reported
                    print(f"  pallas {mode} rows {rows} warps {warps}: {type(exc).__name__} {str(exc)[:200]}")


if __name__ == "__main__":
    main()
