"""Does a Mosaic GPU kernel cost time at its program's first execution, after
``lower().compile()``? (A phase compiles each group's chunk program ahead, in a background
thread; if the kernels were built at their first launch, that compile would not hide them.)

Times, for the decoder's value and gradient through the kernels (``fused_decoder.decode``)
and, for comparison, through XLA's layers (``reference``), at the paper's shapes (32 samples x
4096 points, five layers of 100): ``lower``, ``compile``, the first call and the median of
the next ones. Prints one JSON object.

    python3 benchmarks/probe_first_call.py
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from fae_lab.models import fused_decoder


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - start


def probe(name, decode, operands):
    def loss(c, z, w, b, w_out):
        return jnp.sum(decode(c, z, w, b, w_out) ** 2)

    program = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))
    lowered, lower_s = _timed(lambda: program.lower(*operands))
    compiled, compile_s = _timed(lowered.compile)
    _, first_s = _timed(lambda: compiled(*operands))
    later = [_timed(lambda: compiled(*operands))[1] for _ in range(10)]
    return {"path": name, "lower_s": lower_s, "compile_s": compile_s, "first_call_s": first_s,
            "later_call_s": statistics.median(later)}


def main():
    rng = np.random.default_rng(0)
    samples, points, width, layers = 32, 4096, 100, 4

    def r(*shape, scale=1.0):
        return jnp.asarray(rng.normal(size=shape, scale=scale), jnp.float32)

    operands = (r(points, width), r(samples, width), r(layers, width, width, scale=width ** -0.5),
                r(layers, width, scale=0.1), r(width, scale=width ** -0.5))
    on_gpu = jax.default_backend() == "gpu"  # elsewhere the kernels' jnp stand-ins (a check of the script)
    kernels = functools.partial(fused_decoder.decode, kernels=on_gpu)
    results = [probe("kernels" if on_gpu else "kernel stand-ins", kernels, operands),
               probe("xla", fused_decoder.reference, operands)]
    print(json.dumps({"device": jax.devices()[0].device_kind, "jax": jax.__version__, "results": results}))


if __name__ == "__main__":
    main()
