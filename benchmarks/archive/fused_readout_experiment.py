"""Experiment, not used by fae-lab: the penultimate-RFF readout as fused GPU kernels (Pallas,
Triton): phases, cos, sin and the readout's sum per tile of points, with nothing per point and
frequency written. On an H200 it was not faster than XLA's path (benchmarks/RESULTS.md,
archive list; ``python3 benchmarks/bench_readout.py`` times it), so the decoder keeps
:func:`fae_lab.models.features.fourier_readout`.

The decoder with penultimate random Fourier features ends in

    t_pf = Σ_d B_fd h_pd          (phases in cycles, f over all K·n frequencies of all bands)
    u_p  = Σ_f w^c_f cos 2πt_pf + w^s_f sin 2πt_pf

with h the last hidden layer (P points x d) and B the fixed frequencies (F x d). Through XLA
this is a product that writes t (P x F float32), a pass that reads it for cos, sin and the sum,
and in the backward pass as many arrays again: for the seed's multi-band decoder that is
131,072 x 512 values a step, several times over. Here one program takes a tile of points,
loops over the frequencies a block of columns at a time, and keeps t, cos and sin in
registers: the forward kernel writes only u, the backward kernel only ∂L/∂h and its
per-program partial sums of ∂L/∂w^c, ∂L/∂w^s (recomputing t, cos and sin from h). With
g_p = ∂L/∂u_p:

    ∂L/∂w^c_f = Σ_p g_p cos 2πt_pf,    ∂L/∂w^s_f = Σ_p g_p sin 2πt_pf,
    ∂L/∂h_pd  = Σ_f 2π g_p (w^s_f cos 2πt_pf − w^c_f sin 2πt_pf) B_fd.

B gets no gradient (it is fixed). The phases use the dot algorithm of the XLA path
(:func:`fae_lab.models.features.phase_algorithm`: three TF32 products on a GPU, float32 on a
CPU), reduced to [-1/2, 1/2] cycles before cos and sin as :func:`fourier_embedding` does. The
backward product with B uses ``grad_algorithm`` (default: the same). Widths are zero-padded to
powers of two (Triton's tile shapes): padded rows of h and of B are zero and padded weights
are zero, so they add nothing. This is a ``jax.custom_vjp``: reverse mode only. Off the GPU
the kernels run in Pallas' interpreter (``bench_readout.py --tiny`` checks them there against
the XLA path).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from fae_lab.models.fused import _call_per_chunk, padded_width

_TWO_PI = 2.0 * math.pi


@dataclasses.dataclass(frozen=True)
class ReadoutTiling:
    """``rows``: points per program (a power of two); ``cols``: frequencies per block of the
    loop (a power of two, >= 16); Triton's ``num_warps`` / ``num_stages``; ``interpret``:
    Pallas' interpreter instead of compiling (CPU)."""

    rows: int = 32
    cols: int = 64
    num_warps: int = 4
    num_stages: int = 2
    interpret: bool = False
    fast_trig: bool = False  # PTX sin.approx / cos.approx on the reduced angle (GPU only)


def default_readout_tiling() -> ReadoutTiling:
    """Compiled on a GPU, interpreted anywhere else."""
    return ReadoutTiling(interpret=jax.default_backend() != "gpu")


def _precision(algorithm: str):
    """A dot algorithm's name (``phase_algorithm()``'s: a ``DotAlgorithmPreset`` name or
    ``"highest"``) as the ``precision`` of ``lax.dot_general`` (which Pallas' Triton lowering
    maps to Triton's input precision: ``TF32_TF32_F32_X3`` to ``tf32x3``)."""
    if algorithm.lower() == "highest":
        return lax.Precision.HIGHEST
    return lax.DotAlgorithmPreset[algorithm]


def _dot(a, b, b_contracted: int, precision):
    """``a (m, k)`` times ``b`` contracted on its axis ``b_contracted`` (1: a bᵀ), float32."""
    return lax.dot_general(a, b, (((1,), (b_contracted,)), ((), ())), precision=precision,
                           preferred_element_type=jnp.float32)


def _cos_sin(h, b, precision, fast_trig=False):
    """cos and sin of 2πt for t = h Bᵀ: ``h (rows, D)``, ``b (cols, D)`` -> two ``(rows, cols)``."""
    t = _dot(h, b, 1, precision)
    angle = _TWO_PI * (t - jnp.floor(t + 0.5))
    if fast_trig:
        out = [jax.ShapeDtypeStruct(angle.shape, jnp.float32)]
        cos, = plgpu.elementwise_inline_asm("cos.approx.f32 $0, $1;", args=[angle], constraints="=r,r",
                                            pack=1, result_shape_dtypes=out)
        sin, = plgpu.elementwise_inline_asm("sin.approx.f32 $0, $1;", args=[angle], constraints="=r,r",
                                            pack=1, result_shape_dtypes=out)
        return cos, sin
    return jnp.cos(angle), jnp.sin(angle)


def _forward_kernel(h_ref, b_ref, wc_ref, ws_ref, u_ref, *, n_blocks, cols, precision, fast_trig):
    h = h_ref[...]

    def body(j, acc):
        fs = pl.ds(pl.multiple_of(j * cols, cols), cols)
        c, s = _cos_sin(h, b_ref[fs, :], precision, fast_trig)
        return acc + jnp.sum(c * wc_ref[fs][None, :] + s * ws_ref[fs][None, :], axis=1)

    u_ref[...] = lax.fori_loop(0, n_blocks, body, jnp.zeros((h.shape[0],), jnp.float32))


def _backward_kernel(h_ref, g_ref, b_ref, wc_ref, ws_ref, dh_ref, dwc_ref, dws_ref, *, n_blocks, cols,
                     precision, fast_trig, grad_precision):
    h = h_ref[...]
    g = g_ref[...][:, None]

    def body(j, dh):
        fs = pl.ds(pl.multiple_of(j * cols, cols), cols)
        b = b_ref[fs, :]
        c, s = _cos_sin(h, b, precision, fast_trig)
        gc, gs = g * c, g * s
        dwc_ref[fs] = jnp.sum(gc, axis=0)
        dws_ref[fs] = jnp.sum(gs, axis=0)
        dt = _TWO_PI * (ws_ref[fs][None, :] * gc - wc_ref[fs][None, :] * gs)
        return dh + _dot(dt, b, 0, grad_precision)

    dh_ref[...] = lax.fori_loop(0, n_blocks, body, jnp.zeros(h.shape, jnp.float32))


def _call(kind, h, freqs, wc, ws, g, *, algorithm, grad_algorithm, tiling):
    """``h (R', D)``, ``freqs (F', D)``, ``wc, ws (F',)``, ``g (R',)`` (backward), all padded."""
    rows, width = h.shape
    n_freq = freqs.shape[0]
    programs = rows // tiling.rows
    static = dict(n_blocks=n_freq // tiling.cols, cols=tiling.cols, precision=_precision(algorithm),
                  fast_trig=tiling.fast_trig and not tiling.interpret)
    full = lambda shape: pl.BlockSpec(shape, lambda i: (0,) * len(shape))  # noqa: E731
    row_tile = pl.BlockSpec((tiling.rows, width), lambda i: (i, 0))
    row_values = pl.BlockSpec((tiling.rows,), lambda i: (i,))
    per_program = pl.BlockSpec((n_freq,), lambda i: (i,))
    args = [h, freqs, wc, ws]
    in_specs = [row_tile, full(freqs.shape), full((n_freq,)), full((n_freq,))]
    if kind == "forward":
        kernel = functools.partial(_forward_kernel, **static)
        out_shape = jax.ShapeDtypeStruct((rows,), jnp.float32)
        out_specs = row_values
    else:
        args.insert(1, g)
        in_specs.insert(1, row_values)
        kernel = functools.partial(_backward_kernel, grad_precision=_precision(grad_algorithm), **static)
        out_shape = [jax.ShapeDtypeStruct(h.shape, jnp.float32),
                     jax.ShapeDtypeStruct((programs * n_freq,), jnp.float32),
                     jax.ShapeDtypeStruct((programs * n_freq,), jnp.float32)]
        out_specs = [row_tile, per_program, per_program]
    return _call_per_chunk(kernel, args, in_specs, out_shape, out_specs, programs=programs, tiling=tiling,
                           name=f"fae_rff_readout_{kind}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _readout(h, freqs, wc, ws, algorithm, grad_algorithm, tiling):
    return _call("forward", h, freqs, wc, ws, None, algorithm=algorithm, grad_algorithm=grad_algorithm,
                 tiling=tiling)


def _readout_fwd(h, freqs, wc, ws, algorithm, grad_algorithm, tiling):
    return _readout(h, freqs, wc, ws, algorithm, grad_algorithm, tiling), (h, freqs, wc, ws)


def _readout_bwd(algorithm, grad_algorithm, tiling, saved, g):
    h, freqs, wc, ws = saved
    dh, dwc, dws = _call("backward", h, freqs, wc, ws, g.astype(jnp.float32), algorithm=algorithm,
                         grad_algorithm=grad_algorithm, tiling=tiling)
    n_freq = freqs.shape[0]
    return (dh, jnp.zeros_like(freqs), dwc.reshape(-1, n_freq).sum(0), dws.reshape(-1, n_freq).sum(0))


_readout.defvjp(_readout_fwd, _readout_bwd)


def fused_fourier_readout(h: jax.Array, frequencies: jax.Array, cos_weights: jax.Array,
                          sin_weights: jax.Array, *, algorithm: str | None = None,
                          grad_algorithm: str | None = None,
                          tiling: ReadoutTiling | None = None) -> jax.Array:
    """``Σ_f w^c_f cos 2π(B h)_f + w^s_f sin 2π(B h)_f`` per point, as
    ``fourier_readout(HiddenFourierFeatures.phases(h), w^c, w^s)`` computes it, in two kernels.

    Shapes: ``h (..., d)``, ``frequencies (K, n, d)`` (cycles per unit of h; no gradient),
    ``cos_weights, sin_weights (K, n)`` -> ``(...)`` float32. Differentiable (reverse mode) in
    ``h`` and the weights. ``algorithm``: the phases' dot algorithm (default
    :func:`~fae_lab.models.features.phase_algorithm`); ``grad_algorithm``: that of the
    backward product with B (default: ``algorithm``).
    """
    from fae_lab.models.features import phase_algorithm

    tiling = tiling or default_readout_tiling()
    algorithm = algorithm or phase_algorithm()
    grad_algorithm = grad_algorithm or algorithm
    lead, d = h.shape[:-1], h.shape[-1]
    n_rows = math.prod(lead)
    width = padded_width(d)
    freqs = lax.stop_gradient(frequencies).astype(jnp.float32).reshape(-1, d)
    n_freq = freqs.shape[0]
    cols = min(tiling.cols, padded_width(n_freq))
    tiling = dataclasses.replace(tiling, cols=cols)
    padded_freq = -(-n_freq // cols) * cols
    padded_rows = -(-n_rows // tiling.rows) * tiling.rows
    hp = jnp.pad(h.astype(jnp.float32).reshape(n_rows, d), ((0, padded_rows - n_rows), (0, width - d)))
    bp = jnp.pad(freqs, ((0, padded_freq - n_freq), (0, width - d)))
    wc = jnp.pad(cos_weights.astype(jnp.float32).reshape(-1), (0, padded_freq - n_freq))
    ws = jnp.pad(sin_weights.astype(jnp.float32).reshape(-1), (0, padded_freq - n_freq))
    u = _readout(hp, bp, wc, ws, algorithm, grad_algorithm, tiling)
    return u[:n_rows].reshape(lead)
