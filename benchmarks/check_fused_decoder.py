"""Check the fused decoder kernel (fae_lab/models/fused_decoder.py) on a Hopper GPU.

1. The kernel's u against float64 (NumPy) and against XLA's default precision (TF32 products),
   on fresh random inputs of several shapes: the kernel must be as close to float64 as XLA is
   (at most twice XLA's error: the TF32 yardstick), and finite.
2. The gradient through the kernel's training forward (which keeps the arrays the backward
   needs) and XLA's backward products, against XLA at HIGHEST precision: within twice the
   error of XLA's default-precision (TF32) gradient, for every parameter; and a sweep group's
   members side by side (one launch for all), value and gradient, each member against itself
   alone.
3. ``last_hidden`` (h_L for a readout that is not w·h_L: penultimate RFF): h_L against
   float64 and its gradient (a random cotangent of h_L) against HIGHEST, the same yardsticks.
4. A seed command's whole evaluation (both splits, every scale; the metrics the run store
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


def exact_hidden(c, z, w, b):
    def gelu(x):
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    c, z, w, b = (np.asarray(a, np.float64) for a in (c, z, w, b))
    h = gelu(c[None] + z[:, None])
    for layer in range(w.shape[0]):
        h = gelu(h @ w[layer] + b[layer])
    return h.reshape(-1, h.shape[-1])


def exact(c, z, w, b, w_out):
    return exact_hidden(c, z, w, b) @ np.asarray(w_out, np.float64)


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


GRADIENT_SHAPES = ((4, 1024, 100, 4), (3, 1024, 64, 2), (2, 2048, 128, 4))


def errors_against_highest(got, xla, best) -> tuple[float, float]:
    """The kernel path's and XLA's default (TF32) largest errors against XLA at HIGHEST, both
    relative to the largest |value| at HIGHEST."""
    scale = float(jnp.max(jnp.abs(best)))
    return float(jnp.max(jnp.abs(got - best))) / scale, float(jnp.max(jnp.abs(xla - best))) / scale


def gradient_errors(fn, reference, args, cot, names) -> tuple[dict, bool]:
    """({name: [kernel error, XLA default's error]} against XLA at HIGHEST for the gradient of
    Σ fn(args) · cot with respect to each argument, whether the kernel's gradient is finite):
    ``fn`` through the kernels, ``reference`` its XLA counterpart."""
    def grad(f):
        return jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * cot), argnums=tuple(range(len(args)))))(*args)

    got, xla = grad(fn), grad(reference)
    with jax.default_matmul_precision("highest"):
        best = grad(reference)
    errors = {name: list(errors_against_highest(g, x, h)) for name, g, x, h in zip(names, got, xla, best, strict=True)}
    return errors, all(bool(jnp.all(jnp.isfinite(g))) for g in got)


def check_gradients(seed: int) -> list[dict]:
    """The gradient through the kernel's training forward (keeping h_l and GELU'(a_l)) and
    XLA's backward, against XLA at HIGHEST precision: as close as XLA's default (TF32)
    gradient is, within twice that yardstick, for every parameter."""
    results = []
    for i, shape in enumerate(GRADIENT_SHAPES):
        args = inputs(seed + 10 + i, *shape)
        cot = jax.random.normal(jax.random.key(seed + 99), (shape[0] * shape[1],))
        errors, finite = gradient_errors(lambda *a: fused_decoder.decode(*a, kernels=True), fused_decoder.reference,
                                         args, cot, ("c", "z", "w", "b", "w_out"))
        worst = max(e_kernel / max(e_xla, 1e-12) for e_kernel, e_xla in errors.values())
        results.append({"check": "gradient", "shape (S, P, H, L)": shape,
                        "errors (kernel, xla) against highest": errors, "worst_ratio": worst,
                        "ok": bool(finite and worst <= 2.0)})
    return results


def check_last_hidden(seed: int) -> list[dict]:
    """h_L through the kernel (``readout=False``) against float64, and its gradient for a random
    cotangent of h_L against XLA at HIGHEST: within twice XLA's default (TF32) error."""
    results = []
    for i, shape in enumerate(GRADIENT_SHAPES):
        c, z, w, b, _ = inputs(seed + 30 + i, *shape)
        ref = exact_hidden(c, z, w, b)
        scale = float(np.max(np.abs(ref)))
        h = np.asarray(jax.jit(lambda *a: fused_decoder.last_hidden(*a, kernels=True))(c, z, w, b), np.float64)
        err_kernel = float(np.max(np.abs(h - ref))) / scale
        err_xla = float(np.max(np.abs(np.asarray(jax.jit(fused_decoder.reference_hidden)(c, z, w, b)) - ref))) / scale
        cot = jax.random.normal(jax.random.key(seed + 97), ref.shape)
        errors, finite = gradient_errors(lambda *a: fused_decoder.last_hidden(*a, kernels=True),
                                         fused_decoder.reference_hidden, (c, z, w, b), cot, ("c", "z", "w", "b"))
        ratios = {"h_L": err_kernel / max(err_xla, 1e-12)}
        ratios.update({name: e_kernel / max(e_xla, 1e-12) for name, (e_kernel, e_xla) in errors.items()})
        finite = finite and bool(np.all(np.isfinite(h)))
        worst = max(ratios.values())
        results.append({"check": "last hidden", "shape (S, P, H, L)": shape, "kernel_error": err_kernel,
                        "xla_error": err_xla, "ratio_per_array": ratios, "worst_ratio": worst,
                        "ok": bool(finite and worst <= 2.0)})
    return results


def check_members(seed: int, n_members: int = 3) -> dict:
    """A sweep group's members side by side (``vmap``: one launch for all): value and gradient
    of each member against the XLA reference of that member alone, within twice the TF32
    yardstick of XLA's own error against HIGHEST precision."""
    shape = (8, 1024, 100, 4)
    members = [inputs(seed + 20 + m, *shape) for m in range(n_members)]
    args = [jnp.stack(a) for a in zip(*members, strict=True)]
    cot = jax.random.normal(jax.random.key(seed + 98), (n_members, shape[0] * shape[1]))

    def value_and_grad(fn):
        def one(cot, *a):
            u, pullback = jax.vjp(fn, *a)
            return u, pullback(cot)
        return jax.tree.leaves(jax.jit(jax.vmap(one))(cot, *args))

    got = value_and_grad(lambda *a: fused_decoder.decode(*a, kernels=True))
    xla = value_and_grad(fused_decoder.reference)
    with jax.default_matmul_precision("highest"):
        best = value_and_grad(fused_decoder.reference)
    ratios = {}
    for name, g, x, h in zip(("u", "c", "z", "w", "b", "w_out"), got, xla, best, strict=True):
        for m in range(n_members):
            e_kernel, e_xla = errors_against_highest(g[m], x[m], h[m])
            ratios[name] = max(ratios.get(name, 0.0), e_kernel / max(e_xla, 1e-12))
    finite = all(bool(jnp.all(jnp.isfinite(g))) for g in got)
    worst = max(ratios.values())
    return {"check": "members side by side", "members": n_members, "shape (S, P, H, L)": shape,
            "ratio_per_array": ratios, "worst_ratio": worst, "ok": bool(finite and worst <= 2.0)}


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
    p.add_argument("--command", default="phase_b_h1_lambda0.5",
                   help="seed commands whose evaluation is checked (comma-separated)")
    p.add_argument("--repeats", type=int, default=5, help="evaluations timed each way (0: no evaluation check)")
    p.add_argument("--json", type=Path, help="append the results here")
    args = p.parse_args()
    if not fused_decoder.on_hopper():
        print("check_fused_decoder: needs a Hopper GPU (the kernel runs nowhere else)", file=sys.stderr)
        return 2
    checks = [lambda: check_values(args.seed)]
    checks += [lambda: check_gradients(args.seed), lambda: [check_members(args.seed)],
               lambda: check_last_hidden(args.seed)]
    if args.repeats:
        checks += [lambda c=c: [check_evaluation(c, args.repeats)] for c in args.command.split(",")]
    ok = True
    for check in checks:  # each printed (and appended) as it ends
        for r in check():
            ok = ok and r["ok"]
            print(json.dumps(r), flush=True)
            if args.json:
                with args.json.open("a") as out:
                    out.write(json.dumps({**r, "device": jax.devices()[0].device_kind}) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
