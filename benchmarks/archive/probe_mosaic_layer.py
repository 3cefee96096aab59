"""Probe: one decoder layer's forward, pre = h W and h' = GELU(pre) (tanh form), as one Mosaic GPU
kernel with TF32 ``wgmma`` and the GELU in the epilogue, writing both arrays (what a backward
pass needs), against XLA's product + GELU fusion. Shapes of the paper configuration padded to
128 wide: h (131,072 x 128) float32, W (128 x 128). No bias (a probe of the traffic; a bias is
one more add in the epilogue). Prints median ms over 20 x 50 calls per tiling, and the largest
errors against float64. Needs an H100: Pallas' Mosaic GPU interpreter (JAX 0.10.2, CPU) traces
the kernel but cannot run a ``wgmma`` with a transposed operand. fae-lab does not use it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for bench_fused

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from bench_fused import median_ms  # median ms over repeats of inner calls
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

C = 0.7978845608028654  # sqrt(2 / pi)


def gelu(x):
    return 0.5 * x * (1.0 + jnp.tanh(C * (x + 0.044715 * x * x * x)))


def fused_layer(h, w_t, *, tile_m: int, steps: int, outputs: str = "both", n_ctas: int = 128):
    """GELU layer forward with ``pre = h @ w_t.T``; ``w_t`` (N, K) is W transposed (K-major, as
    TF32 ``wgmma`` needs). Each of ``n_ctas`` blocks loads W once into shared memory, then
    pipelines its share of row tiles (``steps`` tiles in flight). ``outputs``: "both" (pre and
    GELU(pre)), "pre" or "act"."""
    m, k = h.shape
    n = w_t.shape[0]
    tiles = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))  # 32 float32 = 128 bytes
    per_cta = m // tile_m // n_ctas
    assert per_cta * tile_m * n_ctas == m, (m, tile_m, n_ctas)
    n_out = 2 if outputs == "both" else 1

    def body(h_gmem, w_gmem, *rest):
        out_gmem, (w_smem, barrier) = rest[:n_out], rest[n_out:]
        cta = jax.lax.axis_index("cta")
        plgpu.copy_gmem_to_smem(w_gmem, w_smem, barrier)
        plgpu.barrier_wait(barrier)

        def step(_, h_smem, *out_smem):
            def product(acc_ref):
                plgpu.wgmma(acc_ref, h_smem, plgpu.transpose_ref(w_smem, (1, 0)))
                return acc_ref[...]

            pre = pl.run_scoped(product, plgpu.ACC((tile_m, n), jnp.float32))
            values = {"both": (pre, gelu(pre)), "pre": (pre,), "act": (gelu(pre),)}[outputs]
            for ref, value in zip(out_smem, values, strict=True):
                ref[...] = value

        def spec(width):
            return plgpu.BlockSpec((tile_m, width), lambda i: (cta * per_cta + i, 0), transforms=tiles)

        plgpu.emit_pipeline(step, grid=(per_cta,), in_specs=[spec(k)], out_specs=[spec(n)] * n_out,
                            max_concurrent_steps=steps)(h_gmem, *out_gmem)

    out = jax.ShapeDtypeStruct((m, n), jnp.float32)
    return plgpu.kernel(
        body, out_type=(out,) * n_out,
        scratch_types=[plgpu.SMEM((n, k), jnp.float32, transforms=tiles), plgpu.Barrier(num_arrivals=1)],
        grid=(n_ctas,), grid_names=("cta",),
        compiler_params=plgpu.CompilerParams(approx_math=True),
    )(h, w_t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=131072)
    p.add_argument("--traceback", action="store_true", help="print the first failure's traceback and stop")
    args = p.parse_args()
    width = 128
    ka, kb = jax.random.split(jax.random.key(0))
    h = jax.random.normal(ka, (args.rows, width), jnp.float32)
    w = jax.random.normal(kb, (width, width), jnp.float32) / np.sqrt(width)
    pre64 = np.asarray(h, np.float64) @ np.asarray(w, np.float64)
    act64 = np.asarray(gelu(jnp.asarray(pre64)), np.float64)

    def errors(pre, act):
        return (float(np.max(np.abs(np.asarray(pre, np.float64) - pre64)) / np.max(np.abs(pre64))),
                float(np.max(np.abs(np.asarray(act, np.float64) - act64)) / np.max(np.abs(act64))))

    xla = jax.jit(lambda h, w: (lambda pre: (pre, gelu(pre)))(h @ w))
    print(f"xla   {median_ms(xla, (h, w), 20, inner=50)[0]:.4f} ms  errors {errors(*xla(h, w))}", flush=True)
    w_t = w.T
    for outputs, tile_m, steps in (("both", 64, 1), ("pre", 64, 2), ("act", 64, 2), ("pre", 64, 3),
                                   ("both", 128, 1), ("pre", 128, 1)):
        label = f"mgpu outputs {outputs} tile_m {tile_m} steps {steps}"
        try:
            fn = jax.jit(functools.partial(fused_layer, tile_m=tile_m, steps=steps, outputs=outputs,
                                           n_ctas=min(128, args.rows // tile_m)))
            got = fn(h, w_t)
            if outputs == "both":
                errs = errors(*got)
            else:
                errs = errors(got[0], act64)[:1] if outputs == "pre" else errors(pre64, got[0])[1:]
            ms = median_ms(fn, (h, w_t), 20, inner=50)[0]
            print(f"{label}  {ms:.4f} ms  errors {errs}", flush=True)
        except Exception as e:  # a probe: report and go on
            print(f"{label}  failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}", flush=True)
            if args.traceback:
                import traceback

                print("".join(traceback.format_exc().splitlines(keepends=True)[-12:]), flush=True)
                return


if __name__ == "__main__":
    main()
