"""The encoder's per-point MLP and mean pooling as one fused GPU kernel (Pallas, Triton).

Why: on a GPU the paper configuration's training step is bound by moving per-point
activations through device memory (benchmarks/RESULTS.md). The encoder's 131,072 points x 64
activations of three layers only feed a mean, so :func:`mean_embedding` keeps a tile of
points in registers through all the layers and never writes a per-point value: the forward
kernel returns per-chunk pooled sums, and the backward kernel recomputes a tile's
activations from its inputs and accumulates every weight gradient in registers. Its time against
XLA's (``benchmarks/bench_fused.py``) is in benchmarks/RESULTS.md.

It computes the same function as the XLA path (:class:`fae_lab.models.encoder.PointSetEncoder`
with mean pooling): GELU in its tanh form (``jax.nn.gelu``'s default), float32 storage and
accumulation, matrix products in the card's default float32 mode (TF32 on Hopper, as XLA's).
Widths are zero-padded to a power of two (Triton's tile shapes); padded units stay exactly
zero forwards and backwards, and padded points get zero pooling weight. Coordinates and
field values get no gradient (training never differentiates with respect to its data).

The same approach applied to the decoder (five 100-wide layers whose per-point output is
needed) was slower than XLA; ``benchmarks/archive/fused_decoder_experiment.py`` keeps it and
benchmarks/RESULTS.md says by how much.

Attention pooling (and the augmented residual's mean + attention sum) reuses this module's
per-point MLP tile, its backward chain and its padding in
:mod:`fae_lab.models.fused_attention`.

Off the GPU the kernels run in Pallas' interpreter (``interpret=True``), which is how the
CPU test suite checks them against the XLA path.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How the kernels cut the rows (points of all samples): ``rows`` per tile (a power of
    two) in the per-tile kernels, at most ``chunk_rows`` per program where a program
    accumulates sums over its tiles, and Triton's ``num_warps`` / ``num_stages``.
    ``interpret`` runs Pallas' interpreter instead of compiling (CPU tests)."""

    rows: int = 16
    chunk_rows: int = 256
    num_warps: int = 4
    num_stages: int = 3
    interpret: bool = False


def default_tiling() -> Tiling:
    """Compiled on a GPU, interpreted anywhere else."""
    return Tiling(interpret=jax.default_backend() != "gpu")


def padded_width(width: int) -> int:
    """The power of two (>= 16, Triton's smallest matrix tile) a width is padded to."""
    return max(16, 1 << (int(width) - 1).bit_length())


def _gelu(x):
    t = jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
    return 0.5 * x * (1.0 + t)


def _gelu_and_slope(x):
    """GELU(x) and GELU'(x), tanh form."""
    x2 = x * x
    t = jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x2 * x))
    value = 0.5 * x * (1.0 + t)
    slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * x2)
    return value, slope


def _dot(a, b, *, trans_a=False, trans_b=False):
    return plgpu.dot(a, b, trans_a=trans_a, trans_b=trans_b)


def _chunk(n_rows: int, period: int, tiling: Tiling) -> int:
    """Rows per program: a multiple of ``tiling.rows`` dividing both ``n_rows`` and, when
    ``period`` is given, ``period`` (so a chunk lies inside one sample), at most
    ``tiling.chunk_rows``."""
    base = period if period else n_rows
    if base % tiling.rows or n_rows % tiling.rows:
        raise ValueError(f"fused kernels: {base} rows do not split into tiles of {tiling.rows}")
    best = tiling.rows
    c = tiling.rows
    while c <= min(tiling.chunk_rows, base):
        if base % c == 0 and n_rows % c == 0:
            best = c
        c *= 2
    return best


def _params(tiling: Tiling):
    return plgpu.CompilerParams(num_warps=tiling.num_warps, num_stages=tiling.num_stages)


def _full(shape):
    """A block that is the whole array, for every program."""
    return pl.BlockSpec(shape, lambda *_: (0,) * len(shape))


def _call_per_chunk(kernel, args, in_specs, out_shape, out_specs, *, programs: int, tiling: Tiling,
                    name: str):
    """``kernel`` over a grid of ``programs`` (one per chunk of rows) on ``args``, compiled
    with ``tiling``'s Triton parameters (or interpreted): the one ``pallas_call`` of both the
    mean encoder and :mod:`fae_lab.models.fused_attention`."""
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(programs,),
        in_specs=in_specs,
        out_specs=out_specs,
        compiler_params=_params(tiling),
        interpret=tiling.interpret,
        name=name,
    )(*args)


# --------------------------------------------------------------------------------------------
# Encoder: e_p = GELU(γ_p W_γ + b + u_p w_u); h_p = GELU stack; pooled_b = Σ_p ω_p h_p
# --------------------------------------------------------------------------------------------


def _encoder_tile(feat, u, w0, b0, wu, w_ref, b_ref, n_hidden):
    pres = [_dot(feat, w0) + b0 + u[:, None] * wu]
    h = _gelu(pres[0])
    for layer in range(n_hidden):
        pres.append(_dot(h, w_ref[layer]) + b_ref[layer][None, :])
        h = _gelu(pres[-1])
    return pres, h


def _encoder_tile_backward(feat, u, pres, grad_h, w_ref, carry):
    """Back-propagate ``grad_h`` (rows, H), the cotangent of a tile's last-layer embedding
    h, through the GELU stack whose pre-activations are ``pres``; add the tile's weight
    gradients to ``carry = (dW_γ, db, dw_u, (dW_l), (db_l))`` and return it."""
    acc_w0, acc_b0, acc_wu, acc_w, acc_b = carry
    acc_w, acc_b = list(acc_w), list(acc_b)
    for layer in reversed(range(len(pres))):
        _, slope = _gelu_and_slope(pres[layer])
        delta = grad_h * slope
        if layer == 0:
            acc_w0 = acc_w0 + _dot(feat, delta, trans_a=True)
            acc_b0 = acc_b0 + jnp.sum(delta, axis=0)
            acc_wu = acc_wu + jnp.sum(delta * u[:, None], axis=0)
        else:
            h_prev = _gelu(pres[layer - 1])
            acc_w[layer - 1] = acc_w[layer - 1] + _dot(h_prev, delta, trans_a=True)
            acc_b[layer - 1] = acc_b[layer - 1] + jnp.sum(delta, axis=0)
            grad_h = _dot(delta, w_ref[layer - 1], trans_b=True)
    return acc_w0, acc_b0, acc_wu, tuple(acc_w), tuple(acc_b)


def _stack_grad_zeros(w0_shape, n_hidden):
    """The zero accumulators of :func:`_encoder_tile_backward`."""
    width = w0_shape[1]
    zeros = jnp.zeros((width,), jnp.float32)
    return (
        jnp.zeros(w0_shape, jnp.float32), zeros, zeros,
        tuple(jnp.zeros((width, width), jnp.float32) for _ in range(n_hidden)),
        tuple(zeros for _ in range(n_hidden)),
    )


def _store_stack_grads(carry, dw0_ref, db0_ref, dwu_ref, dw_ref, db_ref):
    acc_w0, acc_b0, acc_wu, acc_w, acc_b = carry
    dw0_ref[...] = acc_w0[None]
    db0_ref[...] = acc_b0[None]
    dwu_ref[...] = acc_wu[None]
    for layer in range(len(acc_w)):
        dw_ref[0, layer] = acc_w[layer]
        db_ref[0, layer] = acc_b[layer]


def _encoder_forward_kernel(feat_ref, u_ref, weight_ref, w0_ref, b0_ref, wu_ref, *refs, n_hidden, rows_per_tile, chunk):
    if n_hidden:
        w_ref, b_ref, out_ref = refs
    else:
        (out_ref,), w_ref, b_ref = refs, None, None
    w0, b0, wu = w0_ref[...], b0_ref[...], wu_ref[...]

    def body(j, acc):
        tile = pl.ds(pl.multiple_of(j * rows_per_tile, rows_per_tile), rows_per_tile)
        _, h = _encoder_tile(feat_ref[tile, :], u_ref[tile], w0, b0, wu, w_ref, b_ref, n_hidden)
        return acc + jnp.sum(h * weight_ref[tile][:, None], axis=0)

    acc = jax.lax.fori_loop(0, chunk // rows_per_tile, body, jnp.zeros((out_ref.shape[-1],), jnp.float32))
    out_ref[...] = acc[None]


def _encoder_backward_kernel(feat_ref, u_ref, weight_ref, w0_ref, b0_ref, wu_ref, *refs, n_hidden, rows_per_tile, chunk):
    refs = list(refs)
    w_ref, b_ref = (refs.pop(0), refs.pop(0)) if n_hidden else (None, None)
    grad_ref = refs.pop(0)
    dw0_ref, db0_ref, dwu_ref = refs.pop(0), refs.pop(0), refs.pop(0)
    dw_ref, db_ref = (refs.pop(0), refs.pop(0)) if n_hidden else (None, None)
    w0, b0, wu = w0_ref[...], b0_ref[...], wu_ref[...]
    g = grad_ref[...]  # (1, H): the pooled vector's cotangent for this chunk's sample

    def body(j, carry):
        tile = pl.ds(pl.multiple_of(j * rows_per_tile, rows_per_tile), rows_per_tile)
        feat, u = feat_ref[tile, :], u_ref[tile]
        pres, _ = _encoder_tile(feat, u, w0, b0, wu, w_ref, b_ref, n_hidden)
        return _encoder_tile_backward(feat, u, pres, weight_ref[tile][:, None] * g, w_ref, carry)

    carry = jax.lax.fori_loop(0, chunk // rows_per_tile, body, _stack_grad_zeros(w0.shape, n_hidden))
    _store_stack_grads(carry, dw0_ref, db0_ref, dwu_ref, dw_ref, db_ref)


def _sample_block(width, chunk, n_points):
    """A ``(1, width)`` block of a ``(B, width)`` array: the row of the program's sample."""
    chunks_per_sample = n_points // chunk
    return pl.BlockSpec((1, width), lambda g: (g // chunks_per_sample, 0))


def _stack_inputs(feat, u, weight, w0, b0, wu, weights, biases, chunk, n_points):
    """The per-point MLP's operands and their blocks, in the kernels' argument order
    ``feat, u, weight, W_γ, b, w_u[, W_l, b_l]``; also the block of a per-point ``(P,)`` array."""
    rows, n_feat = u.shape[0], feat.shape[1]
    width, n_hidden = w0.shape[1], weights.shape[0]
    chunks_per_sample = n_points // chunk
    point_block = pl.BlockSpec((chunk,), lambda g: (g % chunks_per_sample,))
    if feat.shape[0] == rows:
        feat_block = pl.BlockSpec((chunk, n_feat), lambda g: (g, 0))
    else:  # shared points: sample g // chunks_per_sample reads the same features
        feat_block = pl.BlockSpec((chunk, n_feat), lambda g: (g % chunks_per_sample, 0))
    args = [feat, u, weight, w0, b0.reshape(1, width), wu.reshape(1, width)]
    in_specs = [feat_block, pl.BlockSpec((chunk,), lambda g: (g,)), point_block, _full(w0.shape),
                _full((1, width)), _full((1, width))]
    if n_hidden:
        args += [weights, biases]
        in_specs += [_full(weights.shape), _full(biases.shape)]
    return args, in_specs, point_block


def _stack_grad_outputs(programs, n_feat, width, n_hidden):
    """Per-program weight gradients of the per-point MLP: shapes and blocks."""
    out_shape = [
        jax.ShapeDtypeStruct((programs, n_feat, width), jnp.float32),
        jax.ShapeDtypeStruct((programs, width), jnp.float32),
        jax.ShapeDtypeStruct((programs, width), jnp.float32),
    ]
    out_specs = [
        pl.BlockSpec((1, n_feat, width), lambda g: (g, 0, 0)),
        pl.BlockSpec((1, width), lambda g: (g, 0)),
        pl.BlockSpec((1, width), lambda g: (g, 0)),
    ]
    if n_hidden:
        out_shape += [
            jax.ShapeDtypeStruct((programs, n_hidden, width, width), jnp.float32),
            jax.ShapeDtypeStruct((programs, n_hidden, width), jnp.float32),
        ]
        out_specs += [
            pl.BlockSpec((1, n_hidden, width, width), lambda g: (g, 0, 0, 0)),
            pl.BlockSpec((1, n_hidden, width), lambda g: (g, 0, 0)),
        ]
    return out_shape, out_specs


def _stack_grad_sums(outs, weights, biases):
    """Sum the per-program MLP gradients (the first 3, or 5 with hidden layers, of ``outs``)
    over programs: ``(dW_γ, db, dw_u, dW, db_l)``, and the outputs after them."""
    dw0, db0, dwu = (jnp.sum(o, axis=0) for o in outs[:3])
    if weights.shape[0]:
        return (dw0, db0, dwu, jnp.sum(outs[3], axis=0), jnp.sum(outs[4], axis=0)), list(outs[5:])
    return (dw0, db0, dwu, jnp.zeros_like(weights), jnp.zeros_like(biases)), list(outs[3:])


def _encoder_call(kind, feat, u, weight, w0, b0, wu, weights, biases, grad, *, n_points, tiling):
    """``u`` holds every sample's points, ``(B·P,)``; ``weight`` the pooling weight of each
    point, ``(P,)``, the same for every sample; ``feat`` is ``(P, F)`` (one point set for the
    batch, read by every sample's chunks) or ``(B·P, F)``."""
    rows, width, n_hidden = u.shape[0], w0.shape[1], weights.shape[0]
    chunk = _chunk(rows, n_points, tiling)
    programs = rows // chunk
    args, in_specs, _ = _stack_inputs(feat, u, weight, w0, b0, wu, weights, biases, chunk, n_points)
    static = dict(n_hidden=n_hidden, rows_per_tile=tiling.rows, chunk=chunk)
    if kind == "forward":
        kernel = functools.partial(_encoder_forward_kernel, **static)
        out_shape = [jax.ShapeDtypeStruct((programs, width), jnp.float32)]
        out_specs = [pl.BlockSpec((1, width), lambda g: (g, 0))]
    else:
        args.append(grad)
        in_specs.append(_sample_block(width, chunk, n_points))
        kernel = functools.partial(_encoder_backward_kernel, **static)
        out_shape, out_specs = _stack_grad_outputs(programs, feat.shape[1], width, n_hidden)
    return _call_per_chunk(kernel, args, in_specs, out_shape, out_specs, programs=programs, tiling=tiling,
                           name=f"fae_encoder_{kind}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9))
def _encoder(feat, u, weight, w0, b0, wu, weights, biases, n_points, tiling):
    (partial,) = _encoder_call("forward", feat, u, weight, w0, b0, wu, weights, biases, None,
                               n_points=n_points, tiling=tiling)
    return partial.reshape(-1, n_points // _chunk(u.shape[0], n_points, tiling), partial.shape[-1]).sum(1)


def _encoder_fwd(feat, u, weight, w0, b0, wu, weights, biases, n_points, tiling):
    pooled = _encoder(feat, u, weight, w0, b0, wu, weights, biases, n_points, tiling)
    return pooled, (feat, u, weight, w0, b0, wu, weights, biases)


def _encoder_bwd(n_points, tiling, saved, grad):
    feat, u, weight, w0, b0, wu, weights, biases = saved
    outs = _encoder_call("backward", feat, u, weight, w0, b0, wu, weights, biases,
                         grad.astype(jnp.float32), n_points=n_points, tiling=tiling)
    grads, _ = _stack_grad_sums(outs, weights, biases)
    return (None, None, None, *grads)


_encoder.defvjp(_encoder_fwd, _encoder_bwd)


def mean_embedding(features, u, coordinate_kernel, bias, value_kernel, weights, biases,
                   *, tiling: Tiling | None = None):
    """pooled_b = (1/P) Σ_p h_p, the encoder's mean-pooled point embedding, with
    h_p = GELU stack of GELU(γ_p W_γ + b + u_p w_u).

    Shapes: ``features (P, F)`` (one point set for the batch) or ``(B, P, F)``, ``u (B, P)``,
    ``coordinate_kernel (F, H)``, ``bias (H,)``, ``value_kernel (H,)``, ``weights`` a sequence
    of ``(H, H)``, ``biases`` of ``(H,)`` -> ``(B, H)`` float32. Differentiable in the
    parameters (not in ``features`` or ``u``). Any P: the rows are padded to whole tiles with
    zero pooling weight.
    """
    tiling = tiling or default_tiling()
    padded = pad_point_mlp(features, u, coordinate_kernel, bias, value_kernel, weights, biases, tiling)
    pooled = _encoder(*padded.stack_args, padded.n_points, tiling)
    return pooled[:, :coordinate_kernel.shape[1]]


@dataclasses.dataclass(frozen=True)
class PaddedPointMLP:
    """The per-point MLP's operands, rows padded to whole tiles (P' points a sample) and
    widths to :func:`padded_width` (F', H'): ``stack_args = (feat (P', F') or (B·P', F'),
    u (B·P',), weight (P',), W_γ (F', H'), b (H'), w_u (H'), W (L, H', H'), b_l (L, H'))``
    with ``weight`` the mean's pooling weight 1/P on real points and 0 on padded ones;
    ``valid (P',)`` is 1 on real points and 0 on padded ones."""

    stack_args: tuple
    n_points: int
    valid: jax.Array


def pad_point_mlp(features, u, coordinate_kernel, bias, value_kernel, weights, biases, tiling):
    """The operands of :func:`mean_embedding`, padded for the kernels (:class:`PaddedPointMLP`)."""
    n_samples, n_points = u.shape
    width = coordinate_kernel.shape[1]
    n_feat = features.shape[-1]
    hp, fp = padded_width(width), padded_width(n_feat)
    padded_points = -(-n_points // tiling.rows) * tiling.rows
    # Shared points stay (P, F): every sample's chunks read them (no per-sample copy).
    feats = jnp.pad(features.astype(jnp.float32),
                    ((0, 0),) * (features.ndim - 2) + ((0, padded_points - n_points), (0, fp - n_feat)))
    values = jnp.pad(u.astype(jnp.float32), ((0, 0), (0, padded_points - n_points)))
    valid = jnp.pad(jnp.ones((n_points,), jnp.float32), (0, padded_points - n_points))
    w0 = jnp.pad(coordinate_kernel.astype(jnp.float32), ((0, fp - n_feat), (0, hp - width)))
    w = (jnp.stack([jnp.pad(m.astype(jnp.float32), ((0, hp - width), (0, hp - width))) for m in weights])
         if len(weights) else jnp.zeros((0, hp, hp), jnp.float32))
    b = (jnp.stack([pad_vector(v, hp) for v in biases]) if len(biases)
         else jnp.zeros((0, hp), jnp.float32))
    args = (feats.reshape(-1, fp), values.reshape(n_samples * padded_points),
            jnp.full((padded_points,), 1.0 / n_points, jnp.float32) * valid, w0,
            pad_vector(bias, hp), pad_vector(value_kernel, hp), w, b)
    return PaddedPointMLP(args, padded_points, valid)


def pad_vector(v, width):
    """A vector as float32, zero-padded to ``width``."""
    return jnp.pad(v.astype(jnp.float32).reshape(-1), (0, width - v.size))
