"""Check the fused decoder kernel (fae_lab/models/fused_decoder.py) on a Hopper GPU.

1. The kernel's u against float64 (NumPy) and against XLA's default precision (TF32 products),
   on fresh random inputs of several shapes: the kernel must be as close to float64 as XLA is
   (at most twice XLA's error: the TF32 yardstick), and finite.
2. Its gradient is XLA's (the kernel serves only the value): equal to the reference's.
3. A seed command's whole evaluation (both splits, every scale; the metrics the run store
   keeps) with the kernel against without it, the two compared with XLA at HIGHEST precision
   against XLA at its default: the yardstick of TF32 rounding for each metric. Also the time of
   one evaluation each way.

Prints one JSON object per check and exits 1 if a check fails. JAX's Mosaic GPU interpreter
cannot run the kernel, so this runs only on a GPU: `python3 benchmarks/check_fused_decoder.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for profile_group
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

import jax
import jax.numpy as jnp
import numpy as np

from fae_lab.models import fused_decoder

SHAPES = ((32, 4096, 100, 4), (7, 1024, 64, 2), (3, 4096, 128, 4), (64, 4096, 100, 4))


def exact(c, z, w, b, w_out):
    def gelu(x):
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    c, z, w, b, w_out = (np.asarray(a, np.float64) for a in (c, z, w, b, w_out))
    h = gelu(c[None] + z[:, None])
    for layer in range(w.shape[0]):
        h = gelu(h @ w[layer] + b[layer])
    return (h @ w_out).reshape(-1)


def inputs(seed, samples, points, width, layers):
    ks = jax.random.split(jax.random.key(seed), 5)
    return (jax.random.normal(ks[0], (points, width)),
            jax.random.normal(ks[1], (samples, width)) * 0.5,
            jax.random.normal(ks[2], (layers, width, width)) * (1.6 / np.sqrt(width)),
            jax.random.normal(ks[3], (layers, width)) * 0.1,
            jax.random.normal(ks[4], (width,)) / np.sqrt(width))


def check_values(seed: int) -> list[dict]:
    results = []
    kernel = jax.jit(lambda *a: fused_decoder.decode(*a, kernels=True))
    xla = jax.jit(fused_decoder.reference)
    for i, shape in enumerate(SHAPES):
        args = inputs(seed + i, *shape)
        ref = exact(*args)
        scale = float(np.max(np.abs(ref)))
        u = np.asarray(kernel(*args), np.float64)
        err_kernel = float(np.max(np.abs(u - ref)) / scale)
        err_xla = float(np.max(np.abs(np.asarray(xla(*args), np.float64) - ref)) / scale)
        ok = bool(np.all(np.isfinite(u)) and err_kernel <= 2 * err_xla)
        results.append({"check": "value", "shape (S, P, H, L)": shape, "kernel_error": err_kernel,
                        "xla_error": err_xla, "ok": ok})
    return results


def check_gradient(seed: int) -> dict:
    args = inputs(seed, 4, 1024, 100, 4)
    cot = jax.random.normal(jax.random.key(seed + 99), (4 * 1024,))

    def loss(fn):
        return jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * cot), argnums=(0, 1, 2, 3, 4)))

    got = loss(lambda *a: fused_decoder.decode(*a, kernels=True))(*args)
    want = loss(fused_decoder.reference)(*args)
    diff = max(float(jnp.max(jnp.abs(g - w))) for g, w in zip(got, want, strict=True))
    return {"check": "gradient is XLA's", "max_abs_difference": diff, "ok": diff == 0.0}


def evaluation(command: str, fused: str, repeats: int, highest: bool = False, tiny: bool = False):
    """(the evaluation's metrics as NumPy leaves, seconds per evaluation) of ``command``'s
    model (seed 0) with the decoder ``fused`` ("kernels" or "off")."""
    from profile_group import evaluation_program, group_chunk

    _, args, state, _, (graphdef, config) = group_chunk(command, 1, 2, tiny, fused_decoder=fused)
    evaluate, problem = evaluation_program(graphdef, config)
    with jax.default_matmul_precision("highest") if highest else contextlib.nullcontext():
        out = jax.device_get(evaluate(state.params, args[3], problem.eval_data))
        start = time.perf_counter()
        for _ in range(repeats):
            jax.device_get(evaluate(state.params, args[3], problem.eval_data))
    return jax.tree.leaves(out), (time.perf_counter() - start) / repeats


def check_evaluation(command: str, repeats: int) -> dict:
    kernel, kernel_s = evaluation(command, "kernels", repeats)
    xla, xla_s = evaluation(command, "off", repeats)
    highest, _ = evaluation(command, "off", 1, highest=True)
    worst = {"ratio": 0.0}
    for i, (k, x, h) in enumerate(zip(kernel, xla, highest, strict=True)):
        k, x, h = (np.asarray(a, np.float64) for a in (k, x, h))
        if k.dtype.kind != "f" or k.size == 0:
            continue
        scale = max(float(np.max(np.abs(h))), 1e-30)
        apart = float(np.max(np.abs(k - x))) / scale
        yardstick = float(np.max(np.abs(x - h))) / scale
        ratio = apart / max(yardstick, 1e-12)
        if ratio > worst["ratio"]:
            worst = {"leaf": i, "shape": list(k.shape), "kernel_vs_xla": apart,
                     "xla_vs_highest": yardstick, "ratio": ratio}
    finite = all(np.all(np.isfinite(np.asarray(a))) for a in kernel if np.asarray(a).dtype.kind == "f")
    return {"check": "evaluation", "command": command, "leaves": len(kernel), "worst_leaf": worst,
            "evaluation_ms_kernel": round(kernel_s * 1e3, 2), "evaluation_ms_xla": round(xla_s * 1e3, 2),
            "ok": bool(finite and worst["ratio"] <= 2.0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--command", default="phase_b_h1_lambda0.5")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, help="append the results here")
    args = p.parse_args()
    if not fused_decoder.on_hopper():
        print("check_fused_decoder: needs a Hopper GPU (the kernel runs nowhere else)", file=sys.stderr)
        return 2
    results = [*check_values(args.seed), check_gradient(args.seed), check_evaluation(args.command, args.repeats)]
    for r in results:
        print(json.dumps(r), flush=True)
        if args.json:
            with args.json.open("a") as out:
                out.write(json.dumps({**r, "device": jax.devices()[0].device_kind}) + "\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
