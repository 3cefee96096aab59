"""The penultimate-RFF decoder's value-and-gradient: old path against new, time and accuracy.

    python benchmarks/bench_rff.py [--batch 32] [--resolution 64] [--repeats 50] [--json FILE]
    python benchmarks/bench_rff.py --tiny          # 16 x 16, batch 2: checks the script on a CPU

For ``rff512`` (``--rff-dim 512``, one band) and ``multiband`` (``--rff-dim 256
--rff-multiscale-sigmas 0.5,1,2,4``), both at the penultimate layer of the paper decoder
(5 GELU layers of 100, latent 64), it times the jitted value and gradient (w.r.t. the
decoder's parameters and z) of L = mean((g(z, x) - u)²) on one grid, along four paths:

- ``concat/highest``: the old decoder, readout(φ(h)) with φ = [cos, sin] concatenated and the
  phases at Precision.HIGHEST;
- ``fused/highest``: the fused readout (``fae_lab.models.features.fourier_readout``)
  recomputing cos and sin for the gradient (``recompute=True``);
- ``keep/highest``: the fused readout keeping cos and sin from the forward pass instead
  (``recompute=False``, its default: what the decoder runs on every backend);
- ``concat/<algo>``, ``fused/<algo>`` and ``keep/<algo>``: the same with the phases' dot algorithm that
  ``phase_algorithm()`` picks on this backend (when it is not HIGHEST) and with each of
  ``--algorithms`` (the fused path only). A path that does not compile gives a row with its
  ``error``.

Accuracy of each path, against ``concat/highest``: the largest phase error
max |t - t₆₄| (cycles) with t₆₄ = h·Bᵀ in float64 NumPy from the same h; the largest
difference of u relative to max |u|; and of each gradient leaf relative to that leaf's
max |·| (the worst leaf reported). Times are medians of ``--repeats`` calls after warm-up.
Results: one JSON object per line on stdout, all of them in ``--json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "rff512": dict(rff_dim=512, rff_multiscale_sigmas=None),
    "multiband": dict(rff_dim=256, rff_multiscale_sigmas=(0.5, 1.0, 2.0, 4.0)),
}


def model_config(name: str, tiny: bool):
    from fae_lab.config import ModelConfig

    size = (dict(latent_dim=8, decoder_hidden=(16,) * 3, encoder_hidden=(8,)) if tiny
            else dict(latent_dim=64, decoder_hidden=(100,) * 5, encoder_hidden=(64, 64, 64)))
    return ModelConfig(pooling_type="mean", decoder_type="rff_output", rff_location="penultimate",
                       n_coordinate_frequencies=16, coordinate_sigma=1.0, **size, **CONFIGS[name])


def paths(extra: tuple[str, ...] = ()):
    """name -> (algorithm of the phases, readout): HIGHEST, phase_algorithm()'s pick, ``extra``."""
    from fae_lab.models.features import HIGHEST, phase_algorithm

    main = list(dict.fromkeys([HIGHEST, phase_algorithm()]))
    chosen = {f"{kind}/{algo}": (algo, kind) for algo in main for kind in ("concat", "fused", "keep")}
    return chosen | {f"fused/{algo}": (algo, "fused") for algo in extra if algo not in main}


def measure(name: str, batch: int, resolution: int, repeats: int, tiny: bool,
            extra: tuple[str, ...] = ()) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from fae_lab.grid import grid_coordinates
    from fae_lab.models import build_model
    from fae_lab.models import decoder as decoder_module
    from fae_lab.models.features import fourier_readout

    cfg = model_config(name, tiny)
    decoder = build_model(cfg, resolution, seed=0).decoder
    x = jnp.asarray(grid_coordinates(resolution))
    z = jax.random.normal(jax.random.key(1), (batch, cfg.latent_dim))
    target = jax.random.normal(jax.random.key(2), (batch, len(x)))
    freqs = np.asarray(decoder.penultimate_features.frequencies[...], np.float64)  # (K, n, d)

    rows, reference = [], None
    for path, (algorithm, readout) in paths(extra).items():
        decoder.penultimate_features.algorithm = algorithm
        graphdef, params, rest = nnx.split(decoder, nnx.Param, ...)

        def loss(p, z, graphdef=graphdef, rest=rest, readout=readout):
            dec = nnx.merge(graphdef, p, rest)
            u = dec.readout(dec.penultimate(z, x))[..., 0] if readout == "concat" else dec(z, x)
            return jnp.mean((u - target) ** 2), u

        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        # The decoder calls fourier_readout with its default (keep); the "fused" path has it
        # recompute. The name is looked up while the step is traced, at its first call.
        decoder_module.fourier_readout = functools.partial(fourier_readout, recompute=readout == "fused")
        try:
            (_, u), grads = jax.block_until_ready(step(params, z))
        except Exception as error:  # a preset this backend refuses: say so, go on
            if reference is None:
                raise
            rows.append({"config": name, "path": path, "error": str(error).splitlines()[0][:300]})
            continue
        finally:
            decoder_module.fourier_readout = fourier_readout
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(step(params, z))
            times.append(time.perf_counter() - start)

        dec = nnx.merge(graphdef, params, rest)
        h = dec.last_hidden(z, x)
        t = np.asarray(dec.penultimate_features.phases(h), np.float64)  # (B, P, K, n)
        t64 = np.einsum("bpd,knd->bpkn", np.asarray(h, np.float64), freqs)
        flat = [np.asarray(g, np.float64) for g in jax.tree.leaves(grads)]
        if reference is None:
            reference = (np.asarray(u, np.float64), flat)
        u_ref, g_ref = reference
        rows.append({
            "config": name, "path": path, "backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind), "batch": batch, "resolution": resolution,
            "us_per_call": round(1e6 * float(np.median(times)), 1),
            "max_phase_error_cycles": float(np.abs(t - t64).max()),
            "max_abs_phase_cycles": float(np.abs(t64).max()),
            "u_rel_diff": float(np.abs(np.asarray(u, np.float64) - u_ref).max() / np.abs(u_ref).max()),
            "grad_rel_diff": max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                                 for a, b in zip(flat, g_ref, strict=True)),
        })
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--tiny", action="store_true", help="16 x 16, batch 2, a small MLP: a CPU check")
    parser.add_argument("--algorithms", default="",
                        help="more dot algorithms of the phases to compare (comma-separated presets)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown or not names:
        print(f"bench_rff: --configs: expected names from {', '.join(CONFIGS)}, got {args.configs!r}",
              file=sys.stderr)
        raise SystemExit(2)
    if args.tiny:
        args.batch, args.resolution, args.repeats = 2, 16, 2
    rows = []
    for name in names:
        for row in measure(name, args.batch, args.resolution, args.repeats, args.tiny,
                           tuple(a for a in args.algorithms.split(",") if a)):
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


if __name__ == "__main__":
    main()
