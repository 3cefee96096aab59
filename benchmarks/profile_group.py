"""Where a vmapped group's training step spends its time: the real program, M members.

    python benchmarks/profile_group.py --command phase_b_h1_lambda0.5 --members 1,3,9
    python benchmarks/profile_group.py --command phase_b_fourier_p1 --members 3 --tiny   # CPU check

Builds what ``fae_lab.train.run.train_group`` trains for M seeds of one of the seed's commands
(``fae_lab.experiments.SEED_COMMANDS``: its own model, loss and scales; 64 x 64, batch 32):
the models, the stacked state, ``make_train_step`` and a chunk of ``--steps`` steps in one
``lax.scan``, ``jax.vmap``-ed over the members and jitted with the state donated, as
``GroupPrograms.chunk`` does. Random fields stand in for the generated data (the step's cost
does not depend on their values). It times ``--repeats`` calls after two warm-up calls (wall
µs per group step and per member step), then traces one call with ``jax.profiler`` and prints
the kernels per group step, largest first (``kernel_breakdown.kernel_times``).

Unlike ``kernel_breakdown.py``, whose step is a hand-written MSE step of one member, this is
the training program itself: batch drawing on the device, the command's loss terms, gradient
clipping, the raveled Adam update and the finiteness checks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from jsonl import emit  # benchmarks/, on the path above

SIZE = ["--generate-n-samples", "4096", "--generate-resolution", "64", "--generate-n-scales", "6",
        "--batch-size", "32"]
TINY = ["--generate-n-samples", "64", "--generate-resolution", "16", "--generate-n-scales", "2",
        "--batch-size", "4", "--spectral-n-bins", "4"]


def group_chunk(command: str, members: int, steps: int, tiny: bool = False, n_fields: int = 256,
                compiler_options: dict | None = None, flags: tuple[str, ...] = (),
                fused_decoder: str = "off"):
    """(jitted chunk, its arguments but the state, the initial state) for ``members`` seeds of
    ``command``, as ``train_group`` builds them (random fields in place of the data);
    ``compiler_options``: XLA's options for compiling the chunk; ``flags``: ``fae-lab train``
    flags after the command's own (``--precision bf16``, say); ``fused_decoder``: the model's
    (``kernels``: fae_lab.models.fused_decoder)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fae_lab.data.views import default_held_out
    from fae_lab.experiments import SEED_COMMANDS
    from fae_lab.grid import grid_coordinates
    from fae_lab.models.autodecoder import apply_model, build_rung_model
    from fae_lab.train.args import parse_run_config
    from fae_lab.train.run import GroupPrograms, use_fused_encoder
    from fae_lab.train.step import (
        StepStatics,
        TrainData,
        adam,
        hyper_from_config,
        initial_group_state,
        make_train_step,
    )

    configs = [parse_run_config([*SEED_COMMANDS[command], *(TINY if tiny else SIZE), *flags, "--seed", str(i)])
               for i in range(members)]
    first = configs[0]
    R, T = first.data.generate_resolution, first.data.generate_n_scales
    fused = use_fused_encoder(first, "single")
    graphdef, params, rest = None, [], []
    for cfg in configs:
        model = build_rung_model(cfg.model, R, 1, seed=cfg.seed, fused_encoder=fused,
                                 fused_decoder=fused_decoder,
                                 compute_dtype=jnp.bfloat16 if cfg.precision == "bf16" else jnp.float32)
        gd, p, r = nnx.split(model, nnx.Param, ...)
        graphdef = graphdef or gd
        params.append(p)
        rest.append(r)
    state, rest, hyper = initial_group_state(params, rest, [hyper_from_config(cfg) for cfg in configs])

    def apply_fn(p, r, x_enc, u_enc, x_dec, field):
        return apply_model(nnx.merge(graphdef, p, r), x_enc, u_enc, x_dec, field)

    d = first.data
    if d.training_mode == "single_scale":
        training_scales = [d.single_scale_index]
    else:
        held = d.held_out_indices if d.held_out_indices is not None else default_held_out(T)
        training_scales = [t for t in range(T) if t not in held]
    fields = jax.random.normal(jax.random.key(7), (min(n_fields, 16 if tiny else n_fields), T, R, R))
    data = TrainData(fields=fields, training_scales=jnp.asarray(training_scales, jnp.int32),
                     grid=jnp.asarray(grid_coordinates(R)))
    keys = jax.random.wrap_key_data(jnp.stack([jax.random.key_data(jax.random.key(c.seed)) for c in configs]))
    # The vmapped, jitted chunk of the training loop itself (GroupPrograms.chunk).
    chunk = GroupPrograms(make_train_step(StepStatics.from_config(first, R), apply_fn, adam()), None,
                          compiler_options=compiler_options).chunk(steps)
    return chunk, (keys, data, hyper, rest), state, fused, (graphdef, first)


def evaluation_program(graphdef, config, members_in_turn: bool = True):
    """(the group's jitted evaluation, as the training loop gets it on one device, and the
    Problem holding its data) for ``config``'s real data; ``members_in_turn=False``: the members
    side by side (vmap), as a group sharded over several devices evaluates them."""
    from fae_lab.train.run import group_programs, prepare_problem
    from fae_lab.train.step import StepStatics

    problem = prepare_problem(config)
    return group_programs(graphdef, StepStatics.from_config(config, problem.resolution), None, problem.bins,
                          problem.cutoff, problem.n_reconstructions,
                          members_in_turn=members_in_turn).evaluate, problem


def evaluation_seconds(graphdef, config, params, rest, repeats: int = 3, trace: Path | None = None,
                       top: int = 25, members_in_turn: bool = True) -> float:
    """Seconds of one evaluation of the group (both splits, every scale, the reconstructions)
    on the command's real data, as the training loop calls it at every ``--eval-every``; with
    ``trace``, one more call is traced and its kernels printed."""
    import jax

    evaluate, problem = evaluation_program(graphdef, config, members_in_turn)
    jax.block_until_ready(evaluate(params, rest, problem.eval_data))
    start = time.perf_counter()
    for _ in range(repeats):
        out = evaluate(params, rest, problem.eval_data)
        jax.device_get(out)  # as the loop reads it
    seconds = (time.perf_counter() - start) / repeats
    if trace is not None:
        from kernel_breakdown import kernel_times, report

        shutil.rmtree(trace, ignore_errors=True)
        with jax.profiler.trace(str(trace)):
            jax.device_get(evaluate(params, rest, problem.eval_data))
        times = kernel_times(trace)
        if times:
            print("   the evaluation's kernels:")
            report(times, 1, top)
    return seconds


def profile(command: str, members: int, steps: int, repeats: int, trace_dir: Path, top: int,
            tiny: bool, evaluate: tuple[str, ...] = (), compiler_options: dict | None = None,
            flags: tuple[str, ...] = (), fused_decoder: str = "off") -> dict:
    import jax
    from kernel_breakdown import kernel_times, report

    from fae_lab.models import fused_decoder as decoder_kernels

    chunk, args, state, fused, (graphdef, config) = group_chunk(command, members, steps, tiny,
                                                                compiler_options=compiler_options, flags=flags,
                                                                fused_decoder=fused_decoder)
    for _ in range(2):
        state, _ = chunk(state, *args)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(repeats):
        state, metrics = chunk(state, *args)
    jax.block_until_ready((state, metrics))
    wall_us = (time.perf_counter() - start) / (repeats * steps) * 1e6
    result = {"command": command, "flags": " ".join(flags), "members": members, "steps_per_call": steps, "fused_encoder": fused,
              "fused_decoder": fused_decoder,
              "decoder_backward": decoder_kernels.BACKWARD if fused_decoder != "off" else None,
              "backend": jax.default_backend(), "compiler_options": compiler_options or {},
              "xla_flags": os.environ.get("XLA_FLAGS", ""), "wall_us_per_group_step": round(wall_us, 1),
              "wall_us_per_member_step": round(wall_us / members, 1),
              "member_steps_per_s": round(members * 1e6 / wall_us, 1)}
    trace = trace_dir / f"{command}_m{members}"
    shutil.rmtree(trace, ignore_errors=True)  # a trace left by an earlier call would add up
    with jax.profiler.trace(str(trace)):
        state, metrics = chunk(state, *args)
        jax.block_until_ready((state, metrics))
    times = kernel_times(trace)
    result["kernel_us_per_group_step"] = round(sum(t for t, _ in times.values()) / steps, 1)
    result["launches_per_group_step"] = round(sum(n for _, n in times.values()) / steps, 1)
    print(f"== {command} {' '.join(flags)}, {members} member(s), fused encoder {fused}, "
          f"fused decoder {fused_decoder} ({result['decoder_backward']} backward chain): wall {wall_us:.1f} us per group step, "
          f"{wall_us / members:.1f} us per member step", flush=True)
    if times:
        report(times, steps, top)
    for how in evaluate:
        seconds = evaluation_seconds(graphdef, config, state.params, args[3], top=top,
                                     trace=trace.with_name(f"{trace.name}_eval_{how}"),
                                     members_in_turn=how == "in-turn")
        result["evaluation_s" if how == "in-turn" else f"evaluation_s_{how}"] = round(seconds, 4)
        print(f"   one evaluation, members {how}: {seconds * 1e3:.1f} ms ({seconds / members * 1e3:.1f} ms "
              f"per member): {seconds * 1e6 / members / config.eval.eval_every:.1f} us per member step at "
              f"--eval-every {config.eval.eval_every}", flush=True)
    return result


def main() -> int:
    from fae_lab.experiments import SEED_COMMANDS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--command", default="phase_b_h1_lambda0.5", choices=sorted(SEED_COMMANDS))
    p.add_argument("--members", default="1,3", help="comma-separated member counts")
    p.add_argument("--steps", type=int, default=20, help="steps per call (one lax.scan)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--trace-dir", type=Path, default=Path("/tmp/fae_group_trace"))
    p.add_argument("--tiny", action="store_true", help="16 x 16, batch 4: check the script on a CPU")
    p.add_argument("--json", type=Path, help="append one JSON line per member count here")
    p.add_argument("--evaluate", nargs="?", const="in-turn", default="",
                   help="also time one evaluation on the command's generated data (4,096 samples), "
                        "its members one after another as the loop on one GPU evaluates them "
                        "(in-turn, the default), side by side (together: vmap), or both "
                        "(in-turn,together)")
    p.add_argument("--compiler-option", action="append", default=[], metavar="NAME=VALUE",
                   help="an XLA option for compiling the training chunk (repeatable), e.g. "
                        "xla_gpu_enable_triton_gemm=false")
    p.add_argument("--flags", default="", help="fae-lab train flags after the command's own, "
                                                 "e.g. '--precision bf16'")
    p.add_argument("--fused-decoder", default="off", choices=("off", "kernels", "jnp"),
                   help="the decoder's hidden layers through fae_lab.models.fused_decoder (kernels: "
                        "Hopper GPUs; jnp: its CPU stand-in)")
    p.add_argument("--decoder-backward", default="kernel", choices=("kernel", "xla"),
                   help="with --fused-decoder: the backward pass's chain as a kernel "
                        "(fae_lab.models.fused_decoder.BACKWARD) or as XLA's products and passes")
    args = p.parse_args()
    from fae_lab.models import fused_decoder as decoder_kernels

    decoder_kernels.BACKWARD = args.decoder_backward
    options = {}
    for item in args.compiler_option:
        name, _, value = item.partition("=")
        options[name] = {"true": True, "false": False}.get(value.lower(), value)
    for members in (int(m) for m in args.members.split(",")):
        result = profile(args.command, members, args.steps, args.repeats, args.trace_dir, args.top, args.tiny,
                         tuple(filter(None, args.evaluate.split(","))), options or None, tuple(args.flags.split()),
                         args.fused_decoder)
        emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
