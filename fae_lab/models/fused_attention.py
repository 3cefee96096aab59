"""The encoder's per-point MLP and attention pooling as one fused GPU kernel (Pallas, Triton).

The attention counterpart of :func:`fae_lab.models.fused.mean_embedding`: a tile of points
stays in registers through the MLP, the value and logit products and the softmax, and nothing
per point is written. For point embeddings h_p ∈ R^H and J heads of width d = H/J
(:class:`fae_lab.models.encoder.AttentionPool`):

    k_p = W_k h_p + b_k,  v_p = W_v h_p + b_v          ([W_k, W_v] = W_kv, the module's kernel)
    ℓ_p^j = q_j · k_p^j / √d,  a_p^j = softmax_p ℓ_p^j,  pooled^j = Σ_p a_p^j v_p^j

Column form. The kernels carry every head's quantities once per column of that head: with
S ∈ {0,1}^{H×H} the same-head indicator (S_rc = 1 iff columns r and c belong to one head),
s = vec(q)/√d and the query folded into the key weights outside the kernels,

    W_q = W_k diag(s) S,  c_q = (b_k ⊙ s) S,  L_p = h_p W_q + c_q ∈ R^H,  L_pc = ℓ_p^{head(c)}

so keys are never formed, the online softmax runs per column (running max m, sum l,
accumulator acc ∈ R^H) with no per-head expansion, and every product is (rows, H) x (H, H),
the tile shapes the MLP already uses. Each program (a chunk of one sample's points) returns
its (m, l, acc); the chunks of a sample are merged outside the kernel by a log-sum-exp merge:

    M = max_c m_c,  l = Σ_c l_c e^{m_c - M},  pooled = Σ_c acc_c e^{m_c - M} / l,  lse = M + log l

Backward (``jax.custom_vjp``), with g the cotangent of pooled and a_pc = exp(L_pc - lse_c)
recomputed per tile (column c's softmax only sees column c's logits):

    dv_p = a_p ⊙ g,   dL_p = a_p ⊙ g ⊙ (v_p - pooled),   dh_p = dL_p W_qᵀ + dv_p W_vᵀ
    dW_q = Σ_p h_pᵀ dL_p,   dc_q = Σ_p dL_p,   dW_v = Σ_p h_pᵀ dv_p,   db_v = Σ_p dv_p

summed in registers per program like the MLP's weight gradients; JAX carries dW_q and dc_q
back to W_k, b_k and q through the folding.

``with_mean`` also returns the mean of h from the same pass (and takes its cotangent in the
backward), which is what :class:`fae_lab.models.encoder.AugmentedResidualPool` adds to the
attention path; its LayerNorm/MLP block stays in JAX.

Padded points (rows up to a whole tile) get logit -10^30, so zero softmax weight; every tile
holds at least one real point (padding is shorter than a tile), so a tile's running max is
always a real logit. Padded columns (widths up to a power of two) have zero W_q, c_q, W_v and
b_v columns, so they pool to exactly zero. Same numerics as the mean kernel: float32, GELU in its
tanh form, matrix products in the card's default float32 mode.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from fae_lab.models.fused import (
    Tiling,
    _call_per_chunk,
    _chunk,
    _dot,
    _encoder_tile,
    _encoder_tile_backward,
    _full,
    _sample_block,
    _stack_grad_outputs,
    _stack_grad_sums,
    _stack_grad_zeros,
    _stack_inputs,
    _store_stack_grads,
    default_tiling,
    pad_point_mlp,
    pad_vector,
    padded_width,
)


def attention_tiling() -> Tiling:
    """The GPU tiling of these kernels: 32-row tiles, up to 512 rows a program, 8 warps, no
    software pipelining (the fastest of the tilings tried with ``benchmarks/bench_fused.py``;
    the backward carries two more H x H gradient sums than the mean kernel, and 8 warps
    halve each thread's share of them). Interpreted, off the GPU, as :func:`default_tiling`."""
    if jax.default_backend() != "gpu":
        return default_tiling()
    return Tiling(rows=32, chunk_rows=512, num_warps=8, num_stages=1)


# The logit of a padded point: exp(-1e30 - m) is exactly 0 for any real running max m.
_PADDED_LOGIT = -1e30


def same_head_matrix(width: int, n_heads: int, padded: int) -> np.ndarray:
    """S (padded, padded): 1 where columns r and c belong to the same head, 0 elsewhere
    (and on the padded columns >= width)."""
    head = np.full(padded, -1)
    head[:width] = np.arange(width) // (width // n_heads)
    return ((head[:, None] == head[None, :]) & (head[:, None] >= 0)).astype(np.float32)


def _attention_tile(h, wq_ref, cq_ref, wv_ref, bv_ref, mask):
    """Values and column-form logits of a tile's embeddings h (rows, H)."""
    v = _dot(h, wv_ref[...]) + bv_ref[...]
    logits = _dot(h, wq_ref[...]) + cq_ref[...] + mask[:, None]
    return v, logits


def _forward_kernel(feat_ref, u_ref, weight_ref, w0_ref, b0_ref, wu_ref, *refs, n_hidden, rows_per_tile,
                    chunk, with_mean):
    refs = list(refs)
    w_ref, b_ref = (refs.pop(0), refs.pop(0)) if n_hidden else (None, None)
    mask_ref, wq_ref, cq_ref, wv_ref, bv_ref = refs[:5]
    m_ref, norm_ref, acc_ref = refs[5:8]
    w0, b0, wu = w0_ref[...], b0_ref[...], wu_ref[...]

    def body(j, carry):
        m, norm, acc, total = carry
        tile = pl.ds(pl.multiple_of(j * rows_per_tile, rows_per_tile), rows_per_tile)
        _, h = _encoder_tile(feat_ref[tile, :], u_ref[tile], w0, b0, wu, w_ref, b_ref, n_hidden)
        v, logits = _attention_tile(h, wq_ref, cq_ref, wv_ref, bv_ref, mask_ref[tile])
        m_new = jnp.maximum(m, jnp.max(logits, axis=0))
        p = jnp.exp(logits - m_new[None, :])
        rescale = jnp.exp(m - m_new)  # 0 on the first tile (m = -inf)
        norm = norm * rescale + jnp.sum(p, axis=0)
        acc = acc * rescale + jnp.sum(p * v, axis=0)
        if with_mean:
            total = total + jnp.sum(h * weight_ref[tile][:, None], axis=0)
        return m_new, norm, acc, total

    width = m_ref.shape[-1]
    zeros = jnp.zeros((width,), jnp.float32)
    init = (jnp.full((width,), -jnp.inf, jnp.float32), zeros, zeros, zeros)
    m, norm, acc, total = jax.lax.fori_loop(0, chunk // rows_per_tile, body, init)
    m_ref[...] = m[None]
    norm_ref[...] = norm[None]
    acc_ref[...] = acc[None]
    if with_mean:
        refs[8][...] = total[None]


def _backward_kernel(feat_ref, u_ref, weight_ref, w0_ref, b0_ref, wu_ref, *refs, n_hidden, rows_per_tile,
                     chunk, with_mean):
    refs = list(refs)
    w_ref, b_ref = (refs.pop(0), refs.pop(0)) if n_hidden else (None, None)
    mask_ref, wq_ref, cq_ref, wv_ref, bv_ref = (refs.pop(0) for _ in range(5))
    lse_ref, pooled_ref, grad_ref = refs.pop(0), refs.pop(0), refs.pop(0)
    grad_mean_ref = refs.pop(0) if with_mean else None
    dw0_ref, db0_ref, dwu_ref = refs.pop(0), refs.pop(0), refs.pop(0)
    dw_ref, db_ref = (refs.pop(0), refs.pop(0)) if n_hidden else (None, None)
    dwq_ref, dcq_ref, dwv_ref, dbv_ref = refs
    w0, b0, wu = w0_ref[...], b0_ref[...], wu_ref[...]
    # (1, H) each: this chunk's sample's log-sum-exp, pooled vector and cotangents
    lse, pooled, g = lse_ref[...], pooled_ref[...], grad_ref[...]
    g_mean = grad_mean_ref[...] if with_mean else None

    def body(j, carry):
        stack, acc_wq, acc_cq, acc_wv, acc_bv = carry
        tile = pl.ds(pl.multiple_of(j * rows_per_tile, rows_per_tile), rows_per_tile)
        feat, u = feat_ref[tile, :], u_ref[tile]
        pres, h = _encoder_tile(feat, u, w0, b0, wu, w_ref, b_ref, n_hidden)
        v, logits = _attention_tile(h, wq_ref, cq_ref, wv_ref, bv_ref, mask_ref[tile])
        dv = jnp.exp(logits - lse) * g
        dlogits = dv * (v - pooled)  # each column's own softmax: d pooled_c / d L_pc
        acc_wq = acc_wq + _dot(h, dlogits, trans_a=True)
        acc_cq = acc_cq + jnp.sum(dlogits, axis=0)
        acc_wv = acc_wv + _dot(h, dv, trans_a=True)
        acc_bv = acc_bv + jnp.sum(dv, axis=0)
        grad_h = _dot(dlogits, wq_ref[...], trans_b=True) + _dot(dv, wv_ref[...], trans_b=True)
        if with_mean:
            grad_h = grad_h + weight_ref[tile][:, None] * g_mean
        stack = _encoder_tile_backward(feat, u, pres, grad_h, w_ref, stack)
        return stack, acc_wq, acc_cq, acc_wv, acc_bv

    width = g.shape[-1]
    zeros = jnp.zeros((width,), jnp.float32)
    square = jnp.zeros((width, width), jnp.float32)
    init = (_stack_grad_zeros(w0.shape, n_hidden), square, zeros, square, zeros)
    stack, acc_wq, acc_cq, acc_wv, acc_bv = jax.lax.fori_loop(0, chunk // rows_per_tile, body, init)
    _store_stack_grads(stack, dw0_ref, db0_ref, dwu_ref, dw_ref, db_ref)
    dwq_ref[...] = acc_wq[None]
    dcq_ref[...] = acc_cq[None]
    dwv_ref[...] = acc_wv[None]
    dbv_ref[...] = acc_bv[None]


def _call(kind, stack_args, pool_args, extra, *, n_points, tiling, with_mean):
    """One pallas_call over the programs (chunks of one sample's points each).
    ``stack_args`` as :class:`fae_lab.models.fused.PaddedPointMLP`; ``pool_args = (mask (P',),
    W_q, c_q, W_v, b_v)``; ``extra`` the backward's per-sample ``(B, H')`` arrays
    ``(lse, pooled, g[, g_mean])``."""
    feat, u, weight, w0, b0, wu, weights, biases = stack_args
    mask, wq, cq, wv, bv = pool_args
    rows, width, n_hidden = u.shape[0], w0.shape[1], weights.shape[0]
    chunk = _chunk(rows, n_points, tiling)
    programs = rows // chunk
    args, in_specs, point_block = _stack_inputs(feat, u, weight, w0, b0, wu, weights, biases, chunk, n_points)
    args += [mask, wq, cq.reshape(1, width), wv, bv.reshape(1, width)]
    in_specs += [point_block, _full(wq.shape), _full((1, width)), _full(wv.shape), _full((1, width))]
    static = dict(n_hidden=n_hidden, rows_per_tile=tiling.rows, chunk=chunk, with_mean=with_mean)
    row = jax.ShapeDtypeStruct((programs, width), jnp.float32)
    row_block = pl.BlockSpec((1, width), lambda g: (g, 0))
    if kind == "forward":
        kernel = functools.partial(_forward_kernel, **static)
        n_out = 4 if with_mean else 3
        out_shape, out_specs = [row] * n_out, [row_block] * n_out
    else:
        args += list(extra)
        in_specs += [_sample_block(width, chunk, n_points)] * len(extra)
        kernel = functools.partial(_backward_kernel, **static)
        out_shape, out_specs = _stack_grad_outputs(programs, feat.shape[1], width, n_hidden)
        square = jax.ShapeDtypeStruct((programs, width, width), jnp.float32)
        square_block = pl.BlockSpec((1, width, width), lambda g: (g, 0, 0))
        out_shape += [square, row, square, row]
        out_specs += [square_block, row_block, square_block, row_block]
    return _call_per_chunk(kernel, args, in_specs, out_shape, out_specs, programs=programs, tiling=tiling,
                           name=f"fae_attention_encoder_{kind}")


def _merge(outs, n_samples, with_mean):
    """Log-sum-exp merge of the chunks' (m, l, acc[, Σ w h]) into per-sample pooled vectors,
    lse and mean, ``(B, H')`` each."""
    m, norm, acc = (o.reshape(n_samples, -1, o.shape[-1]) for o in outs[:3])
    top = jnp.max(m, axis=1)
    weight = jnp.exp(m - top[:, None])
    total = jnp.sum(norm * weight, axis=1)
    pooled = jnp.sum(acc * weight, axis=1) / total
    mean = outs[3].reshape(n_samples, -1, outs[3].shape[-1]).sum(1) if with_mean else None
    return pooled, top + jnp.log(total), mean


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _attention(stack_args, pool_args, n_samples, n_points, tiling, with_mean):
    pooled, _, mean = _merge(_call("forward", stack_args, pool_args, (), n_points=n_points, tiling=tiling,
                                   with_mean=with_mean), n_samples, with_mean)
    return (pooled, mean) if with_mean else pooled


def _attention_fwd(stack_args, pool_args, n_samples, n_points, tiling, with_mean):
    pooled, lse, mean = _merge(_call("forward", stack_args, pool_args, (), n_points=n_points, tiling=tiling,
                                     with_mean=with_mean), n_samples, with_mean)
    return ((pooled, mean) if with_mean else pooled), (stack_args, pool_args, lse, pooled)


def _attention_bwd(n_samples, n_points, tiling, with_mean, saved, grad):
    stack_args, pool_args, lse, pooled = saved
    grads = tuple(g.astype(jnp.float32) for g in (grad if with_mean else (grad,)))
    outs = _call("backward", stack_args, pool_args, (lse, pooled, *grads), n_points=n_points, tiling=tiling,
                 with_mean=with_mean)
    (dw0, db0, dwu, dw, db), rest = _stack_grad_sums(outs, stack_args[6], stack_args[7])
    dwq, dcq, dwv, dbv = (jnp.sum(o, axis=0) for o in rest)
    d_stack = (None, None, None, dw0, db0, dwu, dw, db)
    d_pool = (jnp.zeros_like(pool_args[0]), dwq, dcq, dwv, dbv)
    return d_stack, d_pool


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention_embedding(features, u, coordinate_kernel, bias, value_kernel, weights, biases,
                        key_value_kernel, key_value_bias, query, *, with_mean: bool = False,
                        tiling: Tiling | None = None):
    """AttentionPool(h) for the encoder's point embeddings h_p = GELU stack of
    GELU(γ_p W_γ + b + u_p w_u), without materialising h (module docstring).

    Shapes: as :func:`fae_lab.models.fused.mean_embedding` for the per-point MLP (``features
    (P, F)`` or ``(B, P, F)``, ``u (B, P)``, ...), and ``key_value_kernel (H, 2H)``,
    ``key_value_bias (2H,)`` (keys in the first H columns, values in the last; head j in
    columns j·d..(j+1)·d of each), ``query (J, d)`` -> pooled ``(B, H)`` float32, and with
    ``with_mean`` the tuple ``(pooled, (1/P) Σ_p h_p)``. Differentiable in the parameters (not
    in ``features`` or ``u``). Any P: padded points get zero softmax weight.
    """
    tiling = tiling or attention_tiling()
    n_heads, head_dim = query.shape
    width = coordinate_kernel.shape[1]
    if key_value_kernel.shape != (width, 2 * width) or n_heads * head_dim != width:
        raise ValueError(f"attention_embedding: key/value kernel {key_value_kernel.shape} and query "
                         f"{query.shape} do not fit width {width}")
    hp = padded_width(width)
    padded = pad_point_mlp(features, u, coordinate_kernel, bias, value_kernel, weights, biases, tiling)
    kv = key_value_kernel.astype(jnp.float32)
    wk = jnp.pad(kv[:, :width], ((0, hp - width), (0, hp - width)))
    wv = jnp.pad(kv[:, width:], ((0, hp - width), (0, hp - width)))
    scale = pad_vector(query.reshape(-1) / jnp.sqrt(jnp.float32(head_dim)), hp)
    heads = jnp.asarray(same_head_matrix(width, n_heads, hp))
    # The query folded into the key weights (differentiated by JAX, outside the kernels).
    wq = (wk * scale[None, :]) @ heads
    cq = (pad_vector(key_value_bias[:width], hp) * scale) @ heads
    mask = (1.0 - padded.valid) * _PADDED_LOGIT
    pool_args = (mask, wq, cq, wv, pad_vector(key_value_bias[width:], hp))
    out = _attention(padded.stack_args, pool_args, u.shape[0], padded.n_points, tiling, with_mean)
    if with_mean:
        return out[0][:, :width], out[1][:, :width]
    return out[:, :width]
