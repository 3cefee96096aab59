"""Experiment, not used by fae-lab: the FAE decoder as fused Pallas (Triton) kernels.

Kept as the record of a measured negative result (benchmarks/RESULTS.md, archive). On one
H100 (paper configuration's decoder, 32 x 4096 points, five GELU layers of 100 padded to 128,
TF32 products) the best tiling was slower than XLA for forward and backward, and no faster
for the forward alone, although it moves far fewer bytes: the per-tile float32 products and
GELUs in Triton run far below the card's TF32 rate, so the fused program is bound by
arithmetic issue, not by memory. ``bench_fused.py`` (one folder up) times it.

Design: the forward kernel runs all layers per tile of points and stores each hidden layer's
pre-activation once; the backward pass is one kernel per tile for the whole δ chain
(δ_{l-1} = (δ_l W_lᵀ) ⊙ GELU'(pre_{l-1})), then split-K kernels for the weight gradients
Σ h_{l-1}ᵀ δ_l with GELU recomputed from the stored pre-activations. ``bench_fused.py``
checks it against XLA (values and every gradient) before timing it.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from fae_lab.models.fused import (
    Tiling,
    _chunk,
    _dot,
    _full,
    _gelu,
    _gelu_and_slope,
    _params,
    padded_width,
)


@dataclasses.dataclass(frozen=True)
class DecoderTiling(Tiling):
    """:class:`Tiling` plus the weight-gradient sums' tiles of ``sum_rows``, column blocks of
    ``sum_cols`` and ``sum_warps``."""

    rows: int = 16
    chunk_rows: int = 256
    num_warps: int = 4
    num_stages: int = 2
    sum_rows: int = 64
    sum_cols: int = 32
    sum_warps: int = 4


def default_tiling() -> DecoderTiling:
    return DecoderTiling(interpret=jax.default_backend() != "gpu")


# --------------------------------------------------------------------------------------------
# Decoder: h_0 = GELU(c_p + z_b); h_l = GELU(W_l h_{l-1} + b_l), l = 1..L; u = w·h_L
# --------------------------------------------------------------------------------------------


def _decoder_forward_kernel(cterm_ref, zterm_ref, w_ref, b_ref, wout_ref, u_ref, *res_refs, n_hidden):
    h = _gelu(cterm_ref[...] + zterm_ref[...])
    for layer in range(n_hidden):
        pre = _dot(h, w_ref[layer]) + b_ref[layer][None, :]
        if res_refs:
            res_refs[0][layer] = pre
        h = _gelu(pre)
    u_ref[...] = jnp.sum(h * wout_ref[...], axis=1)


def _decoder_forward(cterm, zterm, weights, biases, wout, *, n_points, keep, tiling):
    n_samples, width = zterm.shape
    n_hidden = weights.shape[0]
    rows = n_samples * n_points
    t = tiling.rows
    tiles_per_sample = n_points // t
    shared = cterm.shape[0] == n_points
    if shared:
        cterm_spec = pl.BlockSpec((t, width), lambda i: (i % tiles_per_sample, 0))
    else:
        cterm_spec = pl.BlockSpec((t, width), lambda i: (i, 0))
    in_specs = [
        cterm_spec,
        pl.BlockSpec((1, width), lambda i: (i // tiles_per_sample, 0)),
        _full(weights.shape),
        _full(biases.shape),
        _full((1, width)),
    ]
    out_shape = [jax.ShapeDtypeStruct((rows,), jnp.float32)]
    out_specs = [pl.BlockSpec((t,), lambda i: (i,))]
    if keep and n_hidden:
        out_shape.append(jax.ShapeDtypeStruct((n_hidden, rows, width), jnp.float32))
        out_specs.append(pl.BlockSpec((n_hidden, t, width), lambda i: (0, i, 0)))
    if not n_hidden:  # Pallas cannot block an empty array: pass an unused layer
        weights = jnp.zeros((1, width, width), jnp.float32)
        biases = jnp.zeros((1, width), jnp.float32)
        in_specs[2:4] = [_full(weights.shape), _full(biases.shape)]
    outs = pl.pallas_call(
        functools.partial(_decoder_forward_kernel, n_hidden=n_hidden),
        out_shape=out_shape,
        grid=(rows // t,),
        in_specs=in_specs,
        out_specs=out_specs,
        compiler_params=_params(tiling),
        interpret=tiling.interpret,
        name="fae_decoder_forward",
    )(cterm, zterm, weights, biases, wout.reshape(1, width))
    return outs[0], (outs[1] if len(outs) > 1 else None)


def _decoder_backward_kernel(du_ref, res_ref, cterm_ref, zterm_ref, w_ref, wout_ref, *refs, n_hidden):
    """The δ chain for one tile: δ_L = du w ⊙ GELU'(pre_L), δ_{l-1} = (δ_l W_lᵀ) ⊙ GELU'(pre_{l-1}),
    every δ written (the weight gradients are summed by :func:`_decoder_weight_grad_kernel`)."""
    if n_hidden:
        deltas_ref, delta0_ref = refs
    else:
        (delta0_ref,) = refs
    grad = du_ref[...][:, None] * wout_ref[...]
    for layer in reversed(range(n_hidden)):
        _, slope = _gelu_and_slope(res_ref[layer])
        delta = grad * slope
        deltas_ref[layer] = delta
        grad = _dot(delta, w_ref[layer], trans_b=True)
    _, slope = _gelu_and_slope(cterm_ref[...] + zterm_ref[...])
    delta0_ref[...] = grad * slope


def _decoder_weight_grad_kernel(*refs, bottom, shared, n_points, rows_per_tile, chunk):
    """Partial Σ_rows h_{l-1}ᵀ δ_l (a column block of it) and Σ_rows δ_l over one chunk."""
    if bottom:
        delta_ref, cterm_ref, zterm_ref, dw_ref, db_ref = refs
    else:
        delta_ref, prev_ref, dw_ref, db_ref = refs
    program = pl.program_id(0)

    def body(j, carry):
        acc_w, acc_b = carry
        tile = pl.ds(pl.multiple_of(j * rows_per_tile, rows_per_tile), rows_per_tile)
        delta = delta_ref[tile, :]
        if bottom:
            row0 = program * chunk + j * rows_per_tile
            if shared:
                cterm = cterm_ref[pl.ds(pl.multiple_of(row0 % n_points, rows_per_tile), rows_per_tile), :]
            else:
                cterm = cterm_ref[tile, :]
            pre = cterm + zterm_ref[pl.ds(row0 // n_points, 1), :]
        else:
            pre = prev_ref[tile, :]
        return acc_w + _dot(_gelu(pre), delta, trans_a=True), acc_b + jnp.sum(delta, axis=0)

    width, cols = dw_ref.shape[-2], dw_ref.shape[-1]
    acc_w, acc_b = jax.lax.fori_loop(
        0, chunk // rows_per_tile, body,
        (jnp.zeros((width, cols), jnp.float32), jnp.zeros((cols,), jnp.float32)),
    )
    dw_ref[...] = acc_w.reshape(dw_ref.shape)
    db_ref[...] = acc_b.reshape(db_ref.shape)


def _decoder_weight_grads(deltas, delta0, res, cterm, zterm, *, n_points, tiling):
    """(dW_l, db_l) for the hidden layers, summed over rows from the δ's."""
    n_hidden, rows, width = deltas.shape
    shared = cterm.shape[0] == n_points
    sum_rows = tiling.sum_rows if n_points % tiling.sum_rows == 0 else tiling.rows
    chunk = _chunk(rows, 0, dataclasses.replace(tiling, rows=sum_rows))
    programs, cols = rows // chunk, min(tiling.sum_cols, width)
    static = dict(shared=shared, n_points=n_points, rows_per_tile=sum_rows, chunk=chunk)
    params = plgpu.CompilerParams(num_warps=tiling.sum_warps, num_stages=tiling.num_stages)
    # Layer 0: its input h_0 = GELU(c + z) is recomputed, not stored.
    dw0, db0 = pl.pallas_call(
        functools.partial(_decoder_weight_grad_kernel, bottom=True, **static),
        out_shape=[jax.ShapeDtypeStruct((programs, width, width), jnp.float32),
                   jax.ShapeDtypeStruct((programs, width), jnp.float32)],
        grid=(programs, width // cols),
        in_specs=[
            pl.BlockSpec((None, chunk, cols), lambda g, c: (0, g, c)),
            _full(cterm.shape) if shared else pl.BlockSpec((chunk, width), lambda g, c: (g, 0)),
            _full(zterm.shape),
        ],
        out_specs=[pl.BlockSpec((1, width, cols), lambda g, c: (g, 0, c)),
                   pl.BlockSpec((1, cols), lambda g, c: (g, c))],
        compiler_params=params,
        interpret=tiling.interpret,
        name="fae_decoder_weight_grad_0",
    )(deltas, cterm, zterm)
    dws, dbs = [jnp.sum(dw0, axis=0)], [jnp.sum(db0, axis=0)]
    if n_hidden > 1:
        dw, db = pl.pallas_call(
            functools.partial(_decoder_weight_grad_kernel, bottom=False, **static),
            out_shape=[jax.ShapeDtypeStruct((programs, n_hidden - 1, width, width), jnp.float32),
                       jax.ShapeDtypeStruct((programs, n_hidden - 1, width), jnp.float32)],
            grid=(programs, n_hidden - 1, width // cols),
            in_specs=[
                pl.BlockSpec((None, chunk, cols), lambda g, k, c: (k + 1, g, c)),
                pl.BlockSpec((None, chunk, width), lambda g, k, c: (k, g, 0)),
            ],
            out_specs=[pl.BlockSpec((1, 1, width, cols), lambda g, k, c: (g, k, 0, c)),
                       pl.BlockSpec((1, 1, cols), lambda g, k, c: (g, k, c))],
            compiler_params=params,
            interpret=tiling.interpret,
            name="fae_decoder_weight_grad",
        )(deltas, res)
        dw, db = jnp.sum(dw, axis=0), jnp.sum(db, axis=0)
        dws += list(dw)
        dbs += list(db)
    return jnp.stack(dws), jnp.stack(dbs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _decoder(cterm, zterm, weights, biases, wout, n_points, tiling):
    u, _ = _decoder_forward(cterm, zterm, weights, biases, wout, n_points=n_points, keep=False, tiling=tiling)
    return u


def _decoder_fwd(cterm, zterm, weights, biases, wout, n_points, tiling):
    u, res = _decoder_forward(cterm, zterm, weights, biases, wout, n_points=n_points, keep=True, tiling=tiling)
    return u, (cterm, zterm, weights, biases, wout, res)


def _decoder_bwd(n_points, tiling, saved, du):
    cterm, zterm, weights, biases, wout, res = saved
    n_samples, width = zterm.shape
    n_hidden = weights.shape[0]
    rows = n_samples * n_points
    t = tiling.rows
    tiles_per_sample = n_points // t
    du = du.astype(jnp.float32)
    shared = cterm.shape[0] == n_points
    if not n_hidden:  # Pallas cannot block an empty array: pass an unused layer
        res_in = jnp.zeros((1, rows, width), jnp.float32)
        w_in = jnp.zeros((1, width, width), jnp.float32)
    else:
        res_in, w_in = res, weights
    out_shape = [jax.ShapeDtypeStruct((rows, width), jnp.float32)]
    out_specs = [pl.BlockSpec((t, width), lambda i: (i, 0))]
    if n_hidden:
        out_shape.insert(0, jax.ShapeDtypeStruct((n_hidden, rows, width), jnp.float32))
        out_specs.insert(0, pl.BlockSpec((n_hidden, t, width), lambda i: (0, i, 0)))
    outs = pl.pallas_call(
        functools.partial(_decoder_backward_kernel, n_hidden=n_hidden),
        out_shape=out_shape,
        grid=(rows // t,),
        in_specs=[
            pl.BlockSpec((t,), lambda i: (i,)),
            pl.BlockSpec((res_in.shape[0], t, width), lambda i: (0, i, 0)),
            pl.BlockSpec((t, width), (lambda i: (i % tiles_per_sample, 0)) if shared else (lambda i: (i, 0))),
            pl.BlockSpec((1, width), lambda i: (i // tiles_per_sample, 0)),
            _full(w_in.shape),
            _full((1, width)),
        ],
        out_specs=out_specs,
        compiler_params=_params(tiling),
        interpret=tiling.interpret,
        name="fae_decoder_backward",
    )(du, res_in, cterm, zterm, w_in, wout.reshape(1, width))
    delta0 = outs[-1]
    if n_hidden:
        dweights, dbiases = _decoder_weight_grads(outs[0], delta0, res, cterm, zterm,
                                                  n_points=n_points, tiling=tiling)
        h_top = _gelu(res[-1])
    else:
        dweights, dbiases = jnp.zeros_like(weights), jnp.zeros_like(biases)
        h_top = _gelu(_broadcast_rows(cterm, zterm, n_points))
    dwout = du @ h_top
    delta0 = delta0.reshape(n_samples, n_points, width)
    dzterm = jnp.sum(delta0, axis=1)
    dcterm = jnp.sum(delta0, axis=0) if shared else delta0.reshape(-1, width)
    return dcterm, dzterm, dweights, dbiases, dwout


_decoder.defvjp(_decoder_fwd, _decoder_bwd)


def _broadcast_rows(cterm, zterm, n_points):
    n_samples, width = zterm.shape
    c = cterm.reshape(-1, n_points, width)
    return (c + zterm[:, None, :]).reshape(n_samples * n_points, width)


def decoder_supported(n_points: int, tiling: DecoderTiling | None = None) -> bool:
    """Whether :func:`decoder_stack` can tile ``n_points`` points per sample."""
    tiling = tiling or default_tiling()
    return n_points % tiling.rows == 0


def decoder_stack(cterm, zterm, weights, biases, wout, *, tiling: DecoderTiling | None = None):
    """u[b, p] = w·h_L with h_0 = GELU(c_p + z_b), h_l = GELU(h_{l-1} W_l + b_l).

    Shapes: ``cterm (P, H)`` (one point set for the batch) or ``(B, P, H)``, ``zterm (B, H)``,
    ``weights`` a sequence of ``(H, H)``, ``biases`` of ``(H,)``, ``wout (H,)`` ->
    ``(B, P)`` float32 (the readout's bias is the caller's). ``P`` must be a multiple of the
    tile's rows (:func:`decoder_supported`). Differentiable in every argument but P.
    """
    tiling = tiling or default_tiling()
    n_samples, width = zterm.shape
    n_points = cterm.shape[-2]
    if not decoder_supported(n_points, tiling):
        raise ValueError(f"fused decoder: {n_points} points per sample is not a multiple of {tiling.rows}")
    hp = padded_width(width)
    pad = hp - width

    def widen(a, axes):
        return jnp.pad(a.astype(jnp.float32), [(0, pad if i in axes else 0) for i in range(a.ndim)])

    c = widen(cterm, {cterm.ndim - 1}).reshape(-1, hp)  # (P, H) shared or (B P, H)
    w = (jnp.stack([widen(m, {0, 1}) for m in weights]) if len(weights)
         else jnp.zeros((0, hp, hp), jnp.float32))
    b = (jnp.stack([widen(v, {0}) for v in biases]) if len(biases)
         else jnp.zeros((0, hp), jnp.float32))
    u = _decoder(c, widen(zterm, {1}), w, b, widen(wout, {0}), n_points, tiling)
    return u.reshape(n_samples, n_points)
