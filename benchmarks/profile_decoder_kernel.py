"""Where the fused decoder kernel's time goes, from Mosaic GPU's on-device profiler (Hopper GPU).

Runs fae_lab.models.fused_decoder's kernel on random operands, the value alone and the
training forward (``keep``), first timed without the profiler, then once with it: each
warpgroup records when it enters and leaves the kernel's named scopes (``tile_loads``,
``activate``, ``write_h``, ``store_wait``, ``weights_wait``, ``product`` in the compute
warpgroups; ``buffer_free_wait`` in the one streaming the weights). Prints, per warpgroup
role, the time in each scope per tile (or per pair, for the weights) and the share of the
warpgroup's span, as one JSON object per mode.

    python3 benchmarks/profile_decoder_kernel.py [--members 1] [--json OUT.jsonl]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for jsonl

import jax
import jax.numpy as jnp
import numpy as np
from jsonl import emit

from fae_lab.models import fused_decoder


def operands(members: int, samples: int, points: int, width: int, layers: int):
    ks = jax.random.split(jax.random.key(0), 5)
    one = (jax.random.normal(ks[0], (points, width)),
           jax.random.normal(ks[1], (samples, width)) * 0.5,
           jax.random.normal(ks[2], (layers, width, width)) * (1.6 / np.sqrt(width)),
           jax.random.normal(ks[3], (layers, width)) * 0.1,
           jax.random.normal(ks[4], (width,)) / np.sqrt(width))
    c, z, w_t, b, w_out = fused_decoder._padded_operands(*one)
    return tuple(jnp.broadcast_to(a, (members, *a.shape)) for a in (c, z, fused_decoder.round_tf32(w_t), b, w_out))


def timed(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats * 1e6


def scope_times(trace_file: Path, pairs_per_block: int) -> dict:
    """Per warpgroup role, µs per tile (compute) or per pair (weights) in each scope: a compute
    warpgroup runs one tile of each of its block's pairs, the weights' warpgroup streams once
    per pair, so both divide by ``pairs_per_block``."""
    events = json.loads(trace_file.read_text())["traceEvents"]
    open_at: dict = {}
    spent = collections.defaultdict(float)
    span: dict = {}
    for e in events:
        wg = (e["tid"] - 1) % 3
        role = "weights" if wg == 2 else "compute"
        key = (e["tid"], e["name"])
        if e["ph"] == "B":
            open_at[key] = e["ts"]
        else:
            spent[(role, e["name"])] += e["ts"] - open_at.pop(key)
        lo, hi = span.get(e["tid"], (e["ts"], e["ts"]))
        span[e["tid"]] = (min(lo, e["ts"]), max(hi, e["ts"]))
    n = {"compute": 0, "weights": 0}
    total = {"compute": 0.0, "weights": 0.0}
    for tid, (lo, hi) in span.items():
        role = "weights" if (tid - 1) % 3 == 2 else "compute"
        n[role] += 1
        total[role] += hi - lo
    out = {}
    for role in ("compute", "weights"):
        if not n[role]:
            continue
        names = sorted({name for r, name in spent if r == role})
        out[role] = {
            "span_us_per_warpgroup": round(total[role] / n[role], 2),
            "us_per_" + ("tile" if role == "compute" else "pair"): {
                name: round(spent[(role, name)] / n[role] / pairs_per_block, 3) for name in names},
            "share_of_span": {name: round(spent[(role, name)] / total[role], 3) for name in names},
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--points", type=int, default=4096)
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--space", type=int, default=1024, help="profiler entries per warpgroup")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    ops = operands(args.members, args.samples, args.points, args.width, args.layers)
    rows = args.members * args.samples * args.points
    pairs = rows // (2 * fused_decoder.TILE)
    blocks = fused_decoder._blocks(pairs)
    for keep in (False, True):
        kernel = jax.jit(lambda *a, keep=keep: fused_decoder._forward_kernel(*a, keep=keep))
        us = timed(kernel, ops, args.repeats)
        with tempfile.TemporaryDirectory() as where:
            fused_decoder.PROFILE.update(profile_space=args.space, profile_dir=where)
            try:
                profiled = jax.jit(lambda *a, keep=keep: fused_decoder._forward_kernel(*a, keep=keep))
                jax.block_until_ready(profiled(*ops))
            finally:
                fused_decoder.PROFILE.clear()
            traces = sorted(Path(where).glob("**/*.json"), key=lambda f: f.stat().st_mtime)
            scopes = scope_times(traces[-1], pairs // blocks) if traces else {}
        result = {"keep": keep, "members": args.members, "shape (S, P, H, L)":
                  [args.samples, args.points, args.width, args.layers], "blocks": blocks,
                  "pairs_per_block": pairs // blocks, "kernel_us": round(us, 1),
                  "kernel_us_per_member": round(us / args.members, 1), "scopes": scopes,
                  "device": jax.devices()[0].device_kind}
        emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
