"""Where the time of one training step goes (paper configuration, 64x64 grid, batch 32).

Times, with the data on the device and each piece jitted on its own (median of repeats,
synchronised): the encoder forward, the decoder forward, the whole forward, forward +
backward, and the full step with Adam; plus XLA's own FLOP and byte counts of the step, and
the floor they imply at the card's measured rates (``--tflops``, ``--tbps``). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fae_lab.config import ModelConfig
from fae_lab.grid import grid_coordinates
from fae_lab.models import build_model


def timed(fn, *args, repeats: int = 50) -> float:
    out = fn(*args)
    jax.block_until_ready(out)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples) * 1e3)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32")
    p.add_argument("--tflops", type=float, default=400.0, help="matrix rate used for the floor (TF32)")
    p.add_argument("--tbps", type=float, default=3.0, help="memory bandwidth used for the floor")
    args = p.parse_args()
    cfg = ModelConfig(pooling_type="mean")
    R, B = args.resolution, args.batch
    dtype = jnp.bfloat16 if args.precision == "bf16" else jnp.float32
    model = build_model(cfg, R, seed=0, compute_dtype=dtype)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grid = jnp.asarray(grid_coordinates(R))
    u = jax.random.normal(jax.random.key(1), (B, R * R))

    def fae(p):
        return nnx.merge(graphdef, p, rest)

    encode = jax.jit(lambda p, u: fae(p).encode(grid, u))
    z = encode(params, u)
    decode = jax.jit(lambda p, z: fae(p).decode(z, grid))
    forward = jax.jit(lambda p, u: fae(p)(grid, u, grid)[0])

    def loss(p, u):
        pred, z = fae(p)(grid, u, grid)
        return jnp.mean((pred - u) ** 2) + 1e-3 * jnp.mean(jnp.sum(z**2, -1))

    grad = jax.jit(jax.value_and_grad(loss))
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    def step(p, s, u):
        value, g = jax.value_and_grad(loss)(p, u)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    step_jit = jax.jit(step)

    def remat_step(policy):
        # The same step with the loss rematerialised under ``policy``: what is saved for the
        # backward pass (and so written to and read from HBM) changes, the result does not.
        def fn(p, s, u):
            value, g = jax.value_and_grad(jax.checkpoint(loss, policy=policy))(p, u)
            updates, s = opt.update(g, s, p)
            return optax.apply_updates(p, updates), s, value

        return jax.jit(fn)
    compiled = step_jit.lower(params, opt_state, u).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    nbytes = float(cost.get("bytes accessed", float("nan")))
    result = {
        "device": jax.devices()[0].device_kind,
        "precision": args.precision,
        "batch": B,
        "points_per_sample": R * R,
        "ms_encoder_forward": timed(encode, params, u),
        "ms_decoder_forward": timed(decode, params, z),
        "ms_forward": timed(forward, params, u),
        "ms_forward_backward": timed(grad, params, u),
        "ms_step_with_adam": timed(step_jit, params, opt_state, u),
        "ms_step_remat_save_dots": timed(remat_step(jax.checkpoint_policies.checkpoint_dots),
                                         params, opt_state, u),
        "ms_step_remat_save_nothing": timed(remat_step(jax.checkpoint_policies.nothing_saveable),
                                            params, opt_state, u),
        "xla_gflop_per_step": flops / 1e9,
        "xla_gbytes_per_step": nbytes / 1e9,
    }
    result["floor_ms_compute"] = flops / (args.tflops * 1e12) * 1e3
    result["floor_ms_memory"] = nbytes / (args.tbps * 1e12) * 1e3
    result["effective_tflops"] = flops / (result["ms_step_with_adam"] * 1e-3) / 1e12
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}))


if __name__ == "__main__":
    main()
