"""Per-kernel GPU time of the paper configuration's training step, from JAX's profiler.

Builds the step as training runs it (the fused encoder unless ``--kernels xla``; Adam; 10
steps in one ``lax.scan``), warms it up, traces one call with ``jax.profiler`` and reads the
GPU plane of the trace (``jax.profiler.ProfileData``): every kernel's name and duration,
grouped by name, per step, largest first. ``--what decoder_experiment`` profiles the fused
decoder experiment's value-and-gradient instead. (Nsight Compute crashed in JAX processes on
the lent H100s.)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "archive"))  # fused_decoder_experiment

STEPS = 10


def model_config(args=None):
    """The paper configuration, or the configuration the command line's model flags name
    (``--pooling``, ``--decoder-type``, ``--rff-*``): the seed's other commands."""
    from fae_lab.config import ModelConfig

    cfg = dict(pooling_type="mean", n_coordinate_frequencies=16, coordinate_sigma=1.0,
               latent_dim=64, encoder_hidden=(64, 64, 64), decoder_hidden=(100,) * 5)
    if args is not None:
        cfg.update(pooling_type=args.pooling, decoder_type=args.decoder_type, rff_dim=args.rff_dim,
                   rff_location=args.rff_location,
                   rff_multiscale_sigmas=tuple(float(s) for s in args.rff_sigmas.split(",")) if args.rff_sigmas else None)
    return ModelConfig(**cfg)


def training_step(kernels: str, n_devices: int = 1, batch: int = 32, unroll: int = 1, cfg=None):
    """The scanned step; with ``n_devices`` > 1 data parallel as training runs it: parameters
    replicated, each device runs the one-device step on its samples (``jax.shard_map``) and
    the gradient, raveled into one vector, is averaged by one all-reduce. (Until session 3 of
    2026-11-26 training and this script let XLA's partitioner split the batch and all-reduce
    each gradient; benchmarks/RESULTS.md compares the two.)"""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from fae_lab.grid import grid_coordinates
    from fae_lab.models import build_model

    cfg = cfg or model_config()
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from fae_lab.train.devices import AXIS
    from fae_lab.train.step import averaged_over_devices

    mesh = Mesh(jax.devices()[:n_devices], (AXIS,)) if n_devices > 1 else None
    model = build_model(cfg, 64, seed=0, fused_encoder=kernels == "pallas")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grid = jnp.asarray(grid_coordinates(64))
    data = jax.random.normal(jax.random.key(1), (STEPS, batch, 64 * 64))
    if mesh is not None:
        data = jax.device_put(data, NamedSharding(mesh, PartitionSpec(None, AXIS)))
        params, rest = jax.device_put((params, rest), NamedSharding(mesh, PartitionSpec()))
    opt = optax.adam(1e-3)

    def loss(p, u):
        pred, z = nnx.merge(graphdef, p, rest)(grid, u, grid)
        return jnp.mean((pred - u) ** 2) + 1e-3 * jnp.mean(jnp.sum(z**2, -1))

    value_and_grad = jax.value_and_grad(loss)
    if mesh is not None:  # the batch arrives split here, so each device gets its rows directly
        value_and_grad = averaged_over_devices(value_and_grad, mesh, (PartitionSpec(), PartitionSpec(AXIS)))

    def body(carry, u):
        p, s = carry
        value, g = value_and_grad(p, u)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), value

    run = jax.jit(lambda p, s, d: jax.lax.scan(body, (p, s), d, unroll=unroll))
    opt_state = opt.init(params)
    if mesh is not None:
        opt_state = jax.device_put(opt_state, NamedSharding(mesh, PartitionSpec()))
    return run, (params, opt_state, data)


def decoder_experiment():
    import bench_fused
    import fused_decoder_experiment
    import jax
    import numpy as np

    decoder, _ = bench_fused.problems(np.random.default_rng(0), 32, 4096, 4096)
    loss = bench_fused.decoder_loss(fused_decoder_experiment.decoder_stack, decoder["cot"])
    return jax.jit(jax.value_and_grad(loss, argnums=1)), (decoder["data"], decoder["params"])


def kernel_times(trace_dir: Path) -> dict[str, tuple[float, int]]:
    """{kernel name: (total microseconds, launches)} over the GPU planes of a trace."""
    from jax.profiler import ProfileData

    totals: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for path in Path(trace_dir).rglob("*.xplane.pb"):
        data = ProfileData.from_file(str(path))
        for plane in data.planes:
            if not plane.name.startswith("/device:GPU"):
                continue
            for line in plane.lines:
                # A stream's line may be named "Stream #14(Memset,MemcpyD2D,Compute)" (JAX 0.11):
                # copies and memsets are told apart by their events' names, not the line's.
                if "stream" not in line.name.lower():
                    continue
                for event in line.events:
                    if event.name.lower().startswith(("memcpy", "memset")):
                        continue
                    entry = totals[event.name[:100]]
                    entry[0] += event.duration_ns / 1e3
                    entry[1] += 1
    return {k: (v[0], v[1]) for k, v in totals.items()}


def report(times: dict[str, tuple[float, int]], per: int, top: int = 40) -> None:
    total = sum(t for t, _ in times.values())
    launches = sum(n for _, n in times.values())
    print(f"{len(times)} kernel names, {launches / per:.0f} launches and {total / per:.1f} us of kernels per step")
    for name, (t, n) in sorted(times.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{t / per:9.1f} us  x{n / per:5.1f}  {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=("step", "decoder_experiment"), default="step")
    p.add_argument("--kernels", choices=("pallas", "xla"), default="pallas")
    p.add_argument("--trace-dir", type=Path, default=Path("/tmp/fae_trace"))
    p.add_argument("--hlo", type=Path, help="also write the compiled program's HLO text here")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--n-devices", type=int, default=1, help="data parallel over this many GPUs")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--unroll", type=int, default=1, help="lax.scan unroll")
    p.add_argument("--pooling", choices=("mean", "attention", "augmented_residual"), default="mean")
    p.add_argument("--decoder-type", default="standard")
    p.add_argument("--rff-dim", type=int, default=512)
    p.add_argument("--rff-location", default="penultimate")
    p.add_argument("--rff-sigmas", default="", help="comma-separated: multi-band RFF")
    args = p.parse_args()
    import jax

    fn, fn_args = (training_step(args.kernels, args.n_devices, args.batch, args.unroll, model_config(args))
                   if args.what == "step"
                   else decoder_experiment())
    import time

    for _ in range(3):
        jax.block_until_ready(fn(*fn_args))
    t0 = time.perf_counter()
    for _ in range(10):
        jax.block_until_ready(fn(*fn_args))
    wall_us = (time.perf_counter() - t0) / 10 * 1e6 / (STEPS if args.what == "step" else 1)
    if args.hlo:
        args.hlo.write_text(fn.lower(*fn_args).compile().as_text())
    trace_dir = args.trace_dir / f"{args.what}_{args.kernels}"
    shutil.rmtree(trace_dir, ignore_errors=True)  # a trace left by an earlier call would add up
    with jax.profiler.trace(str(trace_dir)):
        jax.block_until_ready(fn(*fn_args))
    print(f"== {args.what} (encoder kernels: {args.kernels}, pooling {args.pooling}, decoder {args.decoder_type} "
          f"{args.rff_location if args.decoder_type != 'standard' else ''} {args.rff_sigmas}, batch {args.batch}, "
          f"{args.n_devices} device(s), unroll {args.unroll}; times per device): wall {wall_us:.1f} us per step")
    report(kernel_times(trace_dir), (STEPS if args.what == "step" else 1) * args.n_devices, args.top)


if __name__ == "__main__":
    main()
