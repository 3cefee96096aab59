"""The penultimate-RFF readout alone: the fused kernels against the XLA path, time and accuracy.

    python benchmarks/bench_readout.py [--configs rff512,multiband] [--tilings 64:64:4:2,...]
                                       [--repeats 20] [--json FILE]
    python benchmarks/bench_readout.py --tiny      # small sizes, Pallas' interpreter: a CPU check

For each configuration (the seed's ``rff512``: one band of 256 frequencies; ``multiband``: four
bands of 128, σ = 0.5, 1, 2, 4; both at the 100-wide last hidden layer, batch 32, 64 x 64
points) it times the jitted value and gradient (w.r.t. h and both weight halves) of
L = Σ_p g_p u_p, with u = w·φ(h), along:

- ``xla``: the decoder's XLA path, phases t = B h (``HiddenFourierFeatures.phases``, the
  backend's ``phase_algorithm()``) then ``fourier_readout`` (cos and sin kept);
- ``fused/R:C:W:S``: ``fused_fourier_readout`` of ``archive/fused_readout_experiment.py`` with ``R`` rows
  per program, ``C`` frequencies per block, ``W`` warps and ``S`` stages (``:fast``: PTX's approximate
  cos and sin on the reduced angle); ``fused_tf32/...``
  the same with the backward product in plain TF32 (``--grad-tf32``).

Accuracy: each path against the XLA path with the phases in float32 (``highest``): the largest
difference of u relative to max |u|, and of each gradient relative to its max |·| (worst of
the three). Times are medians of ``--repeats`` calls after warm-up. One JSON line per path on
stdout (printed as each finishes), all of them in ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent / "archive"))  # fused_readout_experiment

CONFIGS = {"rff512": (512, (1.0,)), "multiband": (256, (0.5, 1.0, 2.0, 4.0))}


def problem(name: str, tiny: bool):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fae_lab.models.features import HiddenFourierFeatures

    rff_dim, sigmas = CONFIGS[name]
    rows, width = (2 * 16 * 16, 20) if tiny else (32 * 64 * 64, 100)
    if tiny:
        rff_dim //= 8
    features = HiddenFourierFeatures(width, rff_dim, sigmas, rngs=nnx.Rngs(features=0))
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    h = jax.nn.gelu(jax.random.normal(k1, (rows, width), jnp.float32))  # a hidden layer's values
    n_bands, n = features.frequencies.shape[:2]
    wc = jax.random.normal(k2, (n_bands, n)) / math.sqrt(rff_dim * n_bands)
    ws = jax.random.normal(k3, (n_bands, n)) / math.sqrt(rff_dim * n_bands)
    g = jax.random.normal(k4, (rows,)) / rows
    return features, h, wc, ws, g


def value_and_grad(readout, g):
    import jax
    import jax.numpy as jnp

    return jax.jit(jax.value_and_grad(lambda h, wc, ws: jnp.sum(g * readout(h, wc, ws)), argnums=(0, 1, 2)))


def median_ms(fn, args, repeats: int) -> float:
    import jax

    for _ in range(3):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2]


def relative_errors(out, ref) -> dict:
    import jax.numpy as jnp

    (value, grads), (value_ref, grads_ref) = out, ref
    grad_err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(grads, grads_ref, strict=True))
    return {"value_rel": float(abs(value - value_ref) / abs(value_ref)), "grad_rel": grad_err}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="rff512,multiband")
    p.add_argument("--tilings", default="32:64:4:2,64:32:4:2,32:64:4:2:fast,64:32:4:2:fast,16:64:4:2:fast,"
                                        "32:32:4:2:fast,32:64:8:2:fast,16:128:4:2:fast")
    p.add_argument("--grad-tf32", action="store_true", help="also time the backward product in plain TF32")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import jax
    from fused_readout_experiment import ReadoutTiling, fused_fourier_readout

    from fae_lab.models.features import fourier_readout, phase_algorithm

    interpret = jax.default_backend() != "gpu"
    results = []
    for name in args.configs.split(","):
        features, h, wc, ws, g = problem(name, args.tiny)
        freqs = features.frequencies[...]

        def xla(algorithm, features=features):
            return lambda hidden, cos_w, sin_w: fourier_readout(
                features.phases(hidden) if algorithm is None else _phases(features, hidden, algorithm), cos_w, sin_w)

        reference = value_and_grad(xla("highest"), g)(h, wc, ws)
        paths = {"xla": value_and_grad(xla(None), g)}
        for spec in args.tilings.split(","):
            rows, cols, warps, stages, *fast = spec.split(":")
            tiling = ReadoutTiling(int(rows), int(cols), int(warps), int(stages), interpret=interpret,
                                   fast_trig=fast == ["fast"])
            variants = [("fused", None)] + ([("fused_tf32", "TF32_TF32_F32")] if args.grad_tf32 and not interpret else [])
            for label, grad_algorithm in variants:
                paths[f"{label}/{spec}"] = value_and_grad(
                    lambda hidden, cos_w, sin_w, t=tiling, ga=grad_algorithm, freqs=freqs: fused_fourier_readout(
                        hidden, freqs, cos_w, sin_w, grad_algorithm=ga, tiling=t), g)
        for path, fn in paths.items():
            row = {"config": name, "path": path, "phase_algorithm": phase_algorithm(),
                   "device": jax.devices()[0].device_kind}
            try:
                row.update(relative_errors(fn(h, wc, ws), reference))
                row["ms"] = round(median_ms(fn, (h, wc, ws), 2 if args.tiny else args.repeats), 4)
            except Exception as error:  # a tiling Triton refuses: its row says why
                row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in results))
    return results


def _phases(features, h, algorithm):
    """t = B h with the dot algorithm ``algorithm`` instead of the backend's."""
    import jax.numpy as jnp

    freqs = features.frequencies[...]
    n_bands, n, d = freqs.shape
    t = jnp.einsum("...d,fd->...f", h, freqs.reshape(n_bands * n, d), precision=algorithm)
    return t.reshape((*h.shape[:-1], n_bands, n))


if __name__ == "__main__":
    main()
