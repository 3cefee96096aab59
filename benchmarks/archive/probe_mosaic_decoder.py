"""Probe: the decoder's whole forward pass (first layer's GELU, the hidden layers, the readout)
as one Mosaic GPU kernel per tile of points, against XLA. Nothing but u is written to device
memory; each hidden layer's product is a TF32 ``wgmma`` from shared memory, its bias and GELU
run on the accumulator, and the activation goes back to shared memory as the next product's
left operand. The weights stream through shared memory layer by layer (``--prefetch``: the
next layer's weights load while this layer's product runs).

The question it answers: how fast can the evaluation's decoding (forward only, ~40 M points
per evaluation) and a training forward be once the per-layer passes over device memory are
gone? Shapes of the paper configuration: c (P, 100) per point, z (S, 100) per sample, four
hidden 100 x 100 layers, zero-padded to 128 wide in the kernel. XLA runs the model's own
100-wide arrays. Prints one JSON line per variant.

``--grad`` times value and gradient through a forward kernel that keeps every pre-activation
and :func:`fused_backward`, the chain back per tile, against XLA's. That design made the real
training step slower (benchmarks/RESULTS.md); fae-lab keeps only the forward kernel, for the
decoder's value (fae_lab/models/fused_decoder.py, tile 64, operands rounded to TF32, the
approximate tanh: the variant 64:128:1:1:1 here).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for bench_fused
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import argparse
import functools
import json
import os
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from bench_fused import median_ms  # median ms over repeats of inner calls
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from fae_lab.models.fused_decoder import _gelu as gelu
from fae_lab.models.fused_decoder import round_tf32

C = 0.7978845608028654  # sqrt(2 / pi)
WIDE = 128  # the kernel's padded width (128-byte swizzle: 32 float32 per row of a tile)


def xla_forward(c, z, w, b, w_out):
    """The model's arithmetic at its own width: h_0 = GELU(c_p + z_s), h_l = GELU(h W_l + b_l),
    u = h_L w_out."""
    return xla_forward_kept(c, z, w, b, w_out)[0]


def xla_forward_kept(c, z, w, b, w_out):
    """u and every pre-activation (what XLA's training forward keeps for its backward)."""
    pre = c[None, :, :] + z[:, None, :]
    kept = [pre]
    h = gelu(pre)
    for layer in range(w.shape[0]):
        pre = h @ w[layer] + b[layer]
        kept.append(pre)
        h = gelu(pre)
    return (h @ w_out).reshape(-1), kept


def pad(a, shape):
    return jnp.zeros(shape, a.dtype).at[tuple(slice(0, n) for n in a.shape)].set(a)


def gelu_exp(x):
    """The same GELU through one exponential: 0.5 x (1 + tanh y) = x - x / (exp(2y) + 1)."""
    return x - x / (jnp.exp(2.0 * C * (x + 0.044715 * x * x * x)) + 1.0)


def round_tf32_split(x):
    """x rounded to 11 significant bits (TF32) by Veltkamp's split: t = (2^13 + 1) x,
    x_hi = t - (t - x); three float operations instead of integer ones."""
    t = x * 8193.0
    return t - (t - x)


def fused_forward(c, z, w_t, b, w_out, *, tile_m: int, n_ctas: int, prefetch: bool,
                  approx: bool = True, rounded: bool | str = False, keep: bool = False,
                  activation: str = "tanh", interpret=None):
    """u (S * P,) for c (P, 128), z (S, 128), w_t (L, 128, 128) = W_l transposed (N, K: the
    K-major layout TF32 ``wgmma`` needs), b (L, 128), w_out (128,). ``keep``: also return every
    pre-activation a_0 .. a_L, (L + 1, S * P, 128), as a training forward must for its backward
    pass."""
    n_points, k = c.shape
    n_samples = z.shape[0]
    n_layers = w_t.shape[0]
    assert k == WIDE and n_points % tile_m == 0
    if prefetch:
        assert n_layers % 2 == 0, "the two weight slots alternate per layer"
    rows = n_samples * n_points
    tiles = rows // tile_m
    per_cta = tiles // n_ctas
    assert per_cta * n_ctas == tiles, (tiles, n_ctas)
    tiles_per_sample = n_points // tile_m
    swizzled = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))
    slots = 2 if prefetch else 1
    act = {"tanh": gelu, "exp": gelu_exp}[activation]
    rnd = {False: lambda v: v, True: round_tf32, "int": round_tf32, "split": round_tf32_split}[rounded]

    def body(c_gmem, z_gmem, w_gmem, b_gmem, wout_gmem, u_gmem, *rest):
        if keep:
            res_gmem, h_smem, w_smem, z_smem, b_smem, wout_smem, u_smem, bar, wbar, stage = rest
        else:
            h_smem, w_smem, z_smem, b_smem, wout_smem, u_smem, bar, wbar = rest
        cta = lax.axis_index("cta")

        def store_pre(pre, layer, row0):
            """a_layer of this tile to device memory, through the staging buffer."""
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the last store has read it
            stage[...] = pre
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(stage, res_gmem.at[layer, pl.ds(row0, tile_m)])
        for i, (src, dst) in enumerate(((z_gmem, z_smem), (b_gmem, b_smem), (wout_gmem, wout_smem))):
            plgpu.copy_gmem_to_smem(src, dst, bar.at[i])
        for i in range(3):
            plgpu.barrier_wait(bar.at[i])
        w_out = plgpu.load(wout_smem, (), layout=plgpu.Layout.WGMMA.reduce(0))
        w_out = lax.broadcast_in_dim(w_out, (tile_m, k), [1])
        if prefetch:
            plgpu.copy_gmem_to_smem(w_gmem.at[0], w_smem.at[0], wbar.at[0])

        def tile(i, carry):
            t = cta * per_cta + i
            sample = t // tiles_per_sample
            p0 = pl.multiple_of((t % tiles_per_sample) * tile_m, tile_m)
            plgpu.copy_gmem_to_smem(c_gmem.at[pl.ds(p0, tile_m)], h_smem, bar.at[3])
            plgpu.barrier_wait(bar.at[3])
            z_row = plgpu.load(z_smem.at[sample], (), layout=plgpu.Layout.WGMMA.reduce(0))
            row0 = pl.multiple_of(t * tile_m, tile_m)
            pre = plgpu.load(h_smem, (), layout=plgpu.Layout.WGMMA)
            pre = pre + lax.broadcast_in_dim(z_row, (tile_m, k), [1])
            if keep:
                store_pre(pre, 0, row0)
            h = act(pre)
            h_smem[...] = rnd(h)
            plgpu.commit_smem()
            h = None
            for layer in range(n_layers):
                slot = layer % slots
                if prefetch:
                    plgpu.barrier_wait(wbar.at[slot])
                    # the next layer's weights (after the last layer: the next tile's first)
                    nxt = (layer + 1) % n_layers
                    plgpu.copy_gmem_to_smem(w_gmem.at[nxt], w_smem.at[1 - slot], wbar.at[1 - slot])
                else:
                    plgpu.copy_gmem_to_smem(w_gmem.at[layer], w_smem.at[0], wbar.at[0])
                    plgpu.barrier_wait(wbar.at[0])

                def product(acc_ref, slot=slot):
                    plgpu.wgmma(acc_ref, h_smem, plgpu.transpose_ref(w_smem.at[slot], (1, 0)))
                    return acc_ref[...]

                acc = pl.run_scoped(product, plgpu.ACC((tile_m, k), jnp.float32))
                bias = plgpu.load(b_smem.at[layer], (), layout=plgpu.Layout.WGMMA.reduce(0))
                pre = acc + lax.broadcast_in_dim(bias, (tile_m, k), [1])
                if keep:
                    store_pre(pre, layer + 1, row0)
                h = act(pre)
                if layer < n_layers - 1:
                    h_smem[...] = rnd(h)
                    plgpu.commit_smem()
            u_smem[...] = jnp.sum(h * w_out, axis=1)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(u_smem, u_gmem.at[pl.ds(row0, tile_m)])
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)
            return carry

        lax.fori_loop(0, per_cta, tile, 0)
        if prefetch:
            plgpu.barrier_wait(wbar.at[0])  # the last tile's prefetch, unused
        plgpu.wait_smem_to_gmem(0)

    scratch = [
        plgpu.SMEM((tile_m, k), jnp.float32, transforms=swizzled),
        plgpu.SMEM((slots, k, k), jnp.float32, transforms=swizzled),
        plgpu.SMEM((n_samples, k), jnp.float32),
        plgpu.SMEM((n_layers, k), jnp.float32),
        plgpu.SMEM((k,), jnp.float32),
        plgpu.SMEM((tile_m,), jnp.float32),
        plgpu.Barrier(num_arrivals=1, num_barriers=4),
        plgpu.Barrier(num_arrivals=1, num_barriers=2),
    ]
    out_type = jax.ShapeDtypeStruct((rows,), jnp.float32)
    if keep:
        scratch.append(plgpu.SMEM((tile_m, k), jnp.float32, transforms=swizzled))
        out_type = (out_type, jax.ShapeDtypeStruct((n_layers + 1, rows, k), jnp.float32))
    if rounded:  # the weights once, in XLA; the activations in the kernel
        w_t = round_tf32(w_t)
    return plgpu.kernel(
        body, out_type=out_type,
        scratch_types=scratch, grid=(n_ctas,), grid_names=("cta",),
        compiler_params=plgpu.CompilerParams(approx_math=approx), interpret=interpret,
    )(c, z, w_t, b, w_out)


def gelu_slope(x):
    """GELU'(x), tanh form."""
    x2 = x * x
    t = jnp.tanh(C * (x + 0.044715 * x2 * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * 0.044715 * x2)


def fused_backward(du, a, w, w_out, *, tile_m: int, n_ctas: int, approx: bool = True):
    """The backward pass's chain of the decoder, per tile of points, as one kernel: from the
    cotangent du (rows,) and the kept pre-activations a (L + 1, rows, 128), every
    δa_l = ∂loss/∂a_l (L + 1, rows, 128): δh_L = du w_outᵀ, δa_l = δh_l ⊙ GELU'(a_l),
    δh_{l-1} = δa_l W_lᵀ (a TF32 ``wgmma``; ``w`` (L, 128, 128) is W_l itself, (in, out),
    which is the K-major layout of W_lᵀ). The weight gradients are left to XLA's products."""
    n_layers = w.shape[0]
    rows, k = a.shape[1], a.shape[2]
    assert k == WIDE and n_layers % 2 == 0
    tiles = rows // tile_m
    per_cta = tiles // n_ctas
    assert per_cta * n_ctas == tiles, (tiles, n_ctas)
    swizzled = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))

    def body(du_gmem, a_gmem, w_gmem, wout_gmem, da_gmem,
             a_smem, stage, w_smem, wout_smem, du_smem, bar, wbar):
        cta = lax.axis_index("cta")
        plgpu.copy_gmem_to_smem(wout_gmem, wout_smem, bar.at[0])
        plgpu.barrier_wait(bar.at[0])
        w_out = plgpu.load(wout_smem, (), layout=plgpu.Layout.WGMMA.reduce(0))
        w_out = lax.broadcast_in_dim(w_out, (tile_m, k), [1])
        top = n_layers - 1
        plgpu.copy_gmem_to_smem(w_gmem.at[top], w_smem.at[0], wbar.at[0])

        def load_pre(layer, row0):
            plgpu.copy_gmem_to_smem(a_gmem.at[layer, pl.ds(row0, tile_m)], a_smem, bar.at[1])
            plgpu.barrier_wait(bar.at[1])
            return plgpu.load(a_smem, (), layout=plgpu.Layout.WGMMA)

        def store_delta(delta, layer, row0):
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the last store has read stage
            stage[...] = delta
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(stage, da_gmem.at[layer, pl.ds(row0, tile_m)])

        def tile(i, carry):
            t = cta * per_cta + i
            row0 = pl.multiple_of(t * tile_m, tile_m)
            plgpu.copy_gmem_to_smem(du_gmem.at[pl.ds(row0, tile_m)], du_smem, bar.at[2])
            plgpu.barrier_wait(bar.at[2])
            du_tile = plgpu.load(du_smem, (), layout=plgpu.Layout.WGMMA.reduce(1))
            grad = lax.broadcast_in_dim(du_tile, (tile_m, k), [0]) * w_out  # δh_L
            for step in range(n_layers):  # layers L .. 1 (a_{layer + 1}, W_{layer})
                layer = top - step
                slot = step % 2
                delta = grad * gelu_slope(load_pre(layer + 1, row0))
                store_delta(delta, layer + 1, row0)
                a_smem[...] = round_tf32(delta)  # the product's left operand
                plgpu.commit_smem()
                plgpu.barrier_wait(wbar.at[slot])
                nxt = (layer - 1) % n_layers  # after W_1: the next tile's W_L
                plgpu.copy_gmem_to_smem(w_gmem.at[nxt], w_smem.at[1 - slot], wbar.at[1 - slot])

                def product(acc_ref, slot=slot):
                    plgpu.wgmma(acc_ref, a_smem, plgpu.transpose_ref(w_smem.at[slot], (1, 0)))
                    return acc_ref[...]

                grad = pl.run_scoped(product, plgpu.ACC((tile_m, k), jnp.float32))
            store_delta(grad * gelu_slope(load_pre(0, row0)), 0, row0)
            return carry

        lax.fori_loop(0, per_cta, tile, 0)
        plgpu.barrier_wait(wbar.at[0])  # the last tile's prefetch, unused
        plgpu.wait_smem_to_gmem(0)

    scratch = [
        plgpu.SMEM((tile_m, k), jnp.float32, transforms=swizzled),
        plgpu.SMEM((tile_m, k), jnp.float32, transforms=swizzled),
        plgpu.SMEM((2, k, k), jnp.float32, transforms=swizzled),
        plgpu.SMEM((k,), jnp.float32),
        plgpu.SMEM((tile_m,), jnp.float32),
        plgpu.Barrier(num_arrivals=1, num_barriers=3),
        plgpu.Barrier(num_arrivals=1, num_barriers=2),
    ]
    return plgpu.kernel(
        body, out_type=jax.ShapeDtypeStruct(a.shape, jnp.float32),
        scratch_types=scratch, grid=(n_ctas,), grid_names=("cta",),
        compiler_params=plgpu.CompilerParams(approx_math=approx),
    )(du, a, round_tf32(w), w_out)


def forward_in_jnp(c, z, w_t, b, w_out, **_):
    """What :func:`fused_forward` (keep=True) computes, in plain jnp at full precision: a check
    of the decomposition on the CPU, where the kernels cannot run."""
    pre = (c[None] + z[:, None]).reshape(-1, c.shape[1])
    kept = [pre]
    for layer in range(w_t.shape[0]):
        pre = gelu(pre) @ w_t[layer].T + b[layer]
        kept.append(pre)
    return gelu(pre) @ w_out, jnp.stack(kept)


def backward_in_jnp(du, a, w, w_out, **_):
    """What :func:`fused_backward` computes, in plain jnp."""
    grad = du[:, None] * w_out[None, :]
    deltas = [None] * a.shape[0]
    for layer in reversed(range(w.shape[0])):
        deltas[layer + 1] = grad * gelu_slope(a[layer + 1])
        grad = deltas[layer + 1] @ w[layer].T
    deltas[0] = grad * gelu_slope(a[0])
    return jnp.stack(deltas)


def fused_decoder(c, z, w, b, w_out, *, tile_m: int = 64, n_ctas: int = 128, kernels: bool = True):
    """u of :func:`xla_forward` (same arguments, the model's width) through the two kernels,
    differentiable: the forward keeps a_0 .. a_L; the backward runs :func:`fused_backward`,
    then XLA's products and sums for the parameters' gradients."""
    width = c.shape[1]
    n_points, n_samples = c.shape[0], z.shape[0]

    def widen(x, axes):
        return jnp.pad(x, [(0, WIDE - width if i in axes else 0) for i in range(x.ndim)])

    @jax.custom_vjp
    def decode(c, z, w, b, w_out):
        return forward(c, z, w, b, w_out)[0]

    def forward(c, z, w, b, w_out):
        wide = (widen(c, {1}), widen(z, {1}), widen(jnp.swapaxes(w, 1, 2), {1, 2}), widen(b, {1}),
                widen(w_out, {0}))
        run = fused_forward if kernels else forward_in_jnp
        u, a = run(*wide, tile_m=tile_m, n_ctas=n_ctas, prefetch=True, rounded="int", keep=True)
        return u, (a, w, w_out)

    def backward(saved, du):
        a, w, w_out = saved
        run = fused_backward if kernels else backward_in_jnp
        delta = run(du, a, widen(w, {1, 2}), widen(w_out, {0}), tile_m=tile_m, n_ctas=n_ctas)
        delta = delta[..., :width]
        h = gelu(a[..., :width])
        dw = jnp.einsum("lrk,lrn->lkn", h[:-1], delta[1:])
        db = jnp.sum(delta[1:], axis=1)
        dw_out = h[-1].T @ du
        d0 = delta[0].reshape(n_samples, n_points, width)
        return jnp.sum(d0, axis=0), jnp.sum(d0, axis=1), dw, db, dw_out

    decode.defvjp(forward, backward)
    return decode(c, z, w, b, w_out)


def problem(seed, n_samples, n_points, width, n_layers):
    ks = jax.random.split(jax.random.key(seed), 5)
    c = jax.random.normal(ks[0], (n_points, width), jnp.float32)
    z = jax.random.normal(ks[1], (n_samples, width), jnp.float32) * 0.5
    w = jax.random.normal(ks[2], (n_layers, width, width), jnp.float32) * (1.6 / np.sqrt(width))
    b = jax.random.normal(ks[3], (n_layers, width), jnp.float32) * 0.1
    w_out = jax.random.normal(ks[4], (width,), jnp.float32) / np.sqrt(width)
    return c, z, w, b, w_out


def exact(c, z, w, b, w_out):
    def g(x):
        return 0.5 * x * (1.0 + np.tanh(C * (x + 0.044715 * x ** 3)))

    c, z, w, b, w_out = (np.asarray(a, np.float64) for a in (c, z, w, b, w_out))
    h = g(c[None] + z[:, None])
    for layer in range(w.shape[0]):
        h = g(h @ w[layer] + b[layer])
    return (h @ w_out).reshape(-1)


def gradients(args, emit, inputs):
    """value_and_grad of sum(u * cot) with respect to every input: XLA at the model's width
    (default precision: TF32 products) against :func:`fused_decoder`; errors are relative
    norms against XLA at HIGHEST precision."""
    cot = jax.random.normal(jax.random.key(7), (args.samples * args.points,), jnp.float32)

    def loss(fn):
        return jax.jit(jax.value_and_grad(lambda *a: jnp.sum(fn(*a) * cot), argnums=(0, 1, 2, 3, 4)))

    with jax.default_matmul_precision("highest"):
        exact_grads = loss(xla_forward)(*inputs)

    def errors(got):
        return [float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y))
                for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(exact_grads), strict=True)]

    xla = loss(xla_forward)
    emit({"variant": "xla value+grad", "ms": round(median_ms(xla, inputs, args.repeats, inner=20)[0], 4),
          "errors": errors(xla(*inputs)), "device": jax.devices()[0].device_kind})
    for spec in args.variants.split(","):
        tile_m, n_ctas = (int(v) for v in spec.split(":")[:2])
        name = f"fused value+grad tile_m {tile_m} ctas {n_ctas}"
        try:
            fn = loss(functools.partial(fused_decoder, tile_m=tile_m, n_ctas=n_ctas))
            errs = errors(fn(*inputs))
            emit({"variant": name, "ms": round(median_ms(fn, inputs, args.repeats, inner=20)[0], 4),
                  "errors": errs})
        except Exception as e:  # a probe: report and go on
            emit({"variant": name, "failed": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:400]}"})
            if args.traceback:
                print("".join(traceback.format_exc().splitlines(keepends=True)[-15:]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--points", type=int, default=4096)
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--variants", default="64:128:0,64:128:1,128:128:0,128:128:1,64:256:0",
                   help="tile_m:ctas:prefetch[:approx math (1)[:round to TF32 0|1 (integer)|2 (split)"
                        "[:keep (0)[:GELU 0 (tanh)|1 (exp)]]]], ...")
    p.add_argument("--out", default=None, help="a JSON-lines file for the results")
    p.add_argument("--grad", action="store_true",
                   help="time value and gradient (every input) of sum(u * cot), XLA against the two kernels")
    p.add_argument("--traceback", action="store_true", help="print each failure's traceback tail")
    args = p.parse_args()
    out = open(args.out, "a") if args.out else None

    def emit(record):
        line = json.dumps(record)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    c, z, w, b, w_out = problem(0, args.samples, args.points, args.width, args.layers)
    if args.grad:
        return gradients(args, emit, (c, z, w, b, w_out))
    u64 = exact(c, z, w, b, w_out)
    scale = float(np.max(np.abs(u64)))

    def error(u):
        return float(np.max(np.abs(np.asarray(u, np.float64) - u64)) / scale)

    rows = args.samples * args.points
    xla = jax.jit(xla_forward)
    ms = median_ms(xla, (c, z, w, b, w_out), args.repeats, inner=20)[0]
    fresh = problem(1, args.samples, args.points, args.width, args.layers)
    ref_fresh = exact(*fresh)
    emit({"variant": "xla", "ms": round(ms, 4), "error": error(xla(c, z, w, b, w_out)),
          "error_fresh_inputs": float(np.max(np.abs(np.asarray(xla(*fresh), np.float64) - ref_fresh))
                                      / np.max(np.abs(ref_fresh))),
          "rows": rows, "device": jax.devices()[0].device_kind})
    kept = jax.jit(xla_forward_kept)
    ms = median_ms(kept, (c, z, w, b, w_out), args.repeats, inner=20)[0]
    emit({"variant": "xla keep", "ms": round(ms, 4), "rows": rows})
    cp, zp = pad(c, (args.points, WIDE)), pad(z, (args.samples, WIDE))
    w_t = pad(jnp.swapaxes(w, 1, 2), (args.layers, WIDE, WIDE))
    bp, wop = pad(b, (args.layers, WIDE)), pad(w_out, (WIDE,))
    for spec in args.variants.split(","):
        fields = [int(v) for v in spec.split(":")]
        tile_m, n_ctas, prefetch, approx, rounded, keep, exp = (fields + [1, 0, 0, 0][len(fields) - 3:])[:7]
        rounded = {0: False, 1: "int", 2: "split"}[rounded]
        activation = "exp" if exp else "tanh"
        name = (f"mgpu tile_m {tile_m} ctas {n_ctas} prefetch {bool(prefetch)} approx {bool(approx)}"
                f" rounded {rounded} keep {bool(keep)} gelu {activation}")
        try:
            fn = jax.jit(functools.partial(fused_forward, tile_m=tile_m, n_ctas=n_ctas,
                                           prefetch=bool(prefetch), approx=bool(approx),
                                           rounded=rounded, keep=bool(keep), activation=activation))
            if keep:
                fn = jax.jit(lambda *a, f=fn: f(*a)[0])
            u = fn(cp, zp, w_t, bp, wop)
            err = error(u)
            # fresh inputs: the same function on any valid input
            c2, z2, w2, b2, wo2 = problem(1, args.samples, args.points, args.width, args.layers)
            u2 = fn(pad(c2, cp.shape), pad(z2, zp.shape), pad(jnp.swapaxes(w2, 1, 2), w_t.shape),
                    pad(b2, bp.shape), pad(wo2, wop.shape))
            ref2 = exact(c2, z2, w2, b2, wo2)
            err2 = float(np.max(np.abs(np.asarray(u2, np.float64) - ref2)) / np.max(np.abs(ref2)))
            ms = median_ms(fn, (cp, zp, w_t, bp, wop), args.repeats, inner=20)[0]
            emit({"variant": name, "ms": round(ms, 4), "error": err, "error_fresh_inputs": err2,
                  "rows": rows})
        except Exception as e:  # a probe: report and go on
            emit({"variant": name, "failed": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:400]}"})
            if args.traceback:
                print("".join(traceback.format_exc().splitlines(keepends=True)[-15:]), flush=True)
    if out:
        out.close()


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    main()
