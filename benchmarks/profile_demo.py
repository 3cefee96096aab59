"""Where the CPU time of ``fae-lab demo`` goes, and what each lever of its settings saves.

For each setting (the demo's three runs, then the same with a lever changed) it builds the
run's program as :func:`fae_lab.train.run.train_group` does and measures, in process
CPU-seconds (user + sys of every thread, ``time.process_time``) beside wall seconds:

- compiling the training chunk (``--steps-per-call`` steps in one ``lax.scan``) and the
  evaluation of both splits, and the first call of each;
- a steady chunk (per step) and one evaluation (both splits);
- with ``--parts``, the pieces of one step jitted alone on a batch: encoder forward,
  decoder forward, encoder + decoder forward, the loss alone, forward + backward.

CPU-seconds, not wall, are the figure to compare: the machine's cores are shared. Prints one
JSON object per setting and writes them all to ``--out``.

    python benchmarks/profile_demo.py --data /tmp/demo/data.npz --out /tmp/profile_demo.json

Each setting is the demo's current flags (``fae_lab.demo.DEMO_TRAINING``, ``DEMO_STEPS``) plus
the lever's; every row of the output records its flags. ``results/profile_demo_cpu.json`` was
measured with the demo's settings before 2026-11-30 (batch 32, 1500 steps, an evaluation every
250 steps), the figures of benchmarks/archive/demo_science.md, section 6.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
from flax import nnx

from fae_lab.demo import DEMO_EXPERIMENTS, DEMO_STEPS, DEMO_TRAINING
from fae_lab.losses import field_loss_terms
from fae_lab.models.autodecoder import apply_model, build_rung_model
from fae_lab.train.args import parse_run_config
from fae_lab.train.evaluate import make_evaluate, make_split_evaluate
from fae_lab.train.run import prepare_problem
from fae_lab.train.step import (
    StepStatics,
    TrainState,
    adam,
    hyper_from_config,
    make_chunk,
    make_train_step,
    stack_members,
)


class Clock:
    """CPU-seconds (all threads) and wall seconds since construction."""

    def __init__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def read(self) -> tuple[float, float]:
        return time.process_time() - self.cpu, time.perf_counter() - self.wall


def build(flags: list[str]):
    cfg = parse_run_config(flags)
    problem = prepare_problem(cfg)
    R = problem.resolution
    n_fields = len(problem.train_idx) * problem.data.n_scales
    model = build_rung_model(cfg.model, R, n_fields, seed=cfg.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = adam()
    state = TrainState(params=stack_members([params]), opt_state=stack_members([optimizer.init(params)]),
                       step=jnp.zeros(1, jnp.int32), diverged_step=jnp.full(1, -1, jnp.int32))
    rest_s = stack_members([rest])
    hyper = stack_members([hyper_from_config(cfg)])
    keys = jax.random.wrap_key_data(jnp.stack([jax.random.key_data(jax.random.key(cfg.seed))]))

    def apply_fn(p, r, x_enc, u_enc, x_dec, field):
        return apply_model(nnx.merge(graphdef, p, r), x_enc, u_enc, x_dec, field)

    step_fn = make_train_step(StepStatics.from_config(cfg, R), apply_fn, optimizer)
    chunk = jax.jit(jax.vmap(make_chunk(step_fn, cfg.steps_per_call), in_axes=(0, 0, None, 0, 0)),
                    donate_argnums=(0,))
    evaluate = jax.jit(jax.vmap(make_split_evaluate(make_evaluate(apply_fn, problem.bins, problem.cutoff,
                                                                  problem.n_reconstructions)),
                                in_axes=(0, 0, None)))
    return cfg, problem, (graphdef, params, rest, apply_fn), state, rest_s, hyper, keys, chunk, evaluate


def measure_setting(name: str, flags: list[str], repeats: int) -> dict:
    out: dict = {"name": name, "flags": flags}
    c = Clock()
    cfg, problem, _parts, state, rest, hyper, keys, chunk, evaluate = build(flags)
    out["build_cpu_s"], out["build_wall_s"] = c.read()
    args = (keys, problem.train_data, hyper, rest)

    c = Clock()
    compiled = chunk.lower(state, *args).compile()
    out["chunk_compile_cpu_s"], out["chunk_compile_wall_s"] = c.read()
    c = Clock()
    eval_compiled = evaluate.lower(state.params, rest, problem.eval_data).compile()
    out["eval_compile_cpu_s"], out["eval_compile_wall_s"] = c.read()

    state, _ = compiled(state, *args)  # warm
    jax.block_until_ready(state)
    c = Clock()
    for _ in range(repeats):
        state, metrics = compiled(state, *args)
    jax.block_until_ready((state, metrics))
    cpu, wall = c.read()
    n = repeats * cfg.steps_per_call
    out["step_cpu_ms"], out["step_wall_ms"] = 1e3 * cpu / n, 1e3 * wall / n

    jax.block_until_ready(eval_compiled(state.params, rest, problem.eval_data))
    c = Clock()
    for _ in range(3):
        res = eval_compiled(state.params, rest, problem.eval_data)
    jax.block_until_ready(res)
    cpu, wall = c.read()
    out["eval_cpu_s"], out["eval_wall_s"] = cpu / 3, wall / 3
    n_evals = cfg.max_steps // cfg.eval.eval_every + 1
    out["run_estimate_cpu_s"] = (out["chunk_compile_cpu_s"] + out["eval_compile_cpu_s"]
                                 + cfg.max_steps * out["step_cpu_ms"] / 1e3 + n_evals * out["eval_cpu_s"])
    return out


def measure_parts(flags: list[str], repeats: int = 20) -> dict:
    """One step's pieces, each jitted alone, on a batch of the training split (full grid)."""
    cfg, problem, (graphdef, params, rest, apply_fn), *_ = build(flags)
    R, B = problem.resolution, cfg.optim.batch_size
    grid = problem.train_data.grid
    u = problem.train_data.fields[:B, 0].reshape(B, R * R)

    def encode(p):
        return nnx.merge(graphdef, p, rest).encode(grid, u)

    z = jax.jit(encode)(params)

    def decode(p):
        return nnx.merge(graphdef, p, rest).decode(z, grid)

    def forward(p):
        return apply_fn(p, rest, grid, u, grid, None)[0]

    def loss(pred):
        return sum(field_loss_terms(pred.reshape(B, R, R), u.reshape(B, R, R), loss_type=cfg.loss.loss_type,
                                    lambda_grad=cfg.loss.lambda_grad, freq_weight_power=1.0,
                                    h1_form=cfg.loss.h1_form).values())

    pred = jax.jit(forward)(params)

    def total(p):
        return loss(forward(p))

    pieces = {"encoder_forward": (encode, params), "decoder_forward": (decode, params),
              "forward": (forward, params), "loss_alone": (loss, pred),
              "forward_backward": (jax.grad(total), params)}
    out = {}
    for name, (fn, arg) in pieces.items():
        f = jax.jit(fn)
        jax.block_until_ready(f(arg))
        c = Clock()
        for _ in range(repeats):
            r = f(arg)
        jax.block_until_ready(r)
        cpu, wall = c.read()
        out[f"{name}_cpu_ms"], out[f"{name}_wall_ms"] = 1e3 * cpu / repeats, 1e3 * wall / repeats
    return out


LEVERS = {
    "demo": [],
    "decoder_points_128": ["--decoder-points", "128"],
    "decoder_points_64": ["--decoder-points", "64"],
    "encoder_points_128": ["--encoder-points", "128"],
    "batch_16": ["--batch-size", "16"],
    "steps_per_call_50": ["--steps-per-call", "50"],
    "steps_per_call_250": ["--steps-per-call", "250"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the demo's data.npz (fae-lab demo writes RUNS/data.npz)")
    p.add_argument("--out", required=True)
    p.add_argument("--runs", nargs="*", default=[e.name for e in DEMO_EXPERIMENTS])
    p.add_argument("--levers", nargs="*", default=list(LEVERS))
    p.add_argument("--repeats", type=int, default=4, help="steady chunks timed per setting")
    p.add_argument("--parts", action="store_true")
    a = p.parse_args()
    results = []
    for e in DEMO_EXPERIMENTS:
        if e.name not in a.runs:
            continue
        base = ["--data-path", a.data, "--max-steps", str(DEMO_STEPS), *DEMO_TRAINING, *e.argv,
                "--output-dir", "/tmp/profile_demo_unused"]
        if a.parts:
            r = {"name": f"{e.name}/parts", **measure_parts(base)}
            print(json.dumps(r), flush=True)
            results.append(r)
        for lever in a.levers:
            flags = [*base, *LEVERS[lever]]
            if lever.startswith("decoder_points") and e.name == "h1":
                continue  # the H1 loss needs the full grid (refused by the parser)
            r = measure_setting(f"{e.name}/{lever}", flags, a.repeats)
            r["loadavg"] = os.getloadavg()
            print(json.dumps(r), flush=True)
            results.append(r)
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
