"""Spectral error metrics on the periodic R x R grid (docs/metrics.md).

For a field e[y, x] on the periodic grid, ê = fft2(e) / R², so that Parseval reads
Σ_n |ê_n|² = mean_xy e². Mode n = (nx, ny) has integer components from ``fftfreq(R) * R``
(cycles per unit length, :mod:`fae_lab.grid`) and magnitude |n| = √(nx² + ny²) ∈ [0, R/√2].

Every function of arrays here is jax.numpy, jittable and vmappable, in float32 or float64
(lower precisions are computed in float32). The bin tables are NumPy constants, built once per
(R, n_bins). The evaluation is split in two, so a trainer can accumulate over batches of test
samples on the device: :func:`evaluation_sums` per batch (the sums add across batches), then
:func:`evaluation_metrics` once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from fae_lab.errors import UsageError
from fae_lab.grid import radial_bin_edges, radial_bin_index, wavenumber_magnitude

__all__ = [
    "RadialBins",
    "default_cutoff",
    "error_power",
    "evaluation_metrics",
    "evaluation_sums",
    "low_high_split",
    "radial_bins",
    "radial_spectrum",
    "resolve_cutoff",
]


@dataclass(frozen=True, eq=False)
class RadialBins:
    """Equal-width bins of the mode magnitude |n| over [0, R/√2].

    Bin b holds the modes with ``lower[b] <= |n| < upper[b]``; the last bin is closed, so the
    corner modes |n| = R/√2 fall in it. ``index[iy, ix]`` is the bin of the mode that ``fft2``
    puts at ``[iy, ix]``. Equality and hashing are by identity (the fields are arrays), which
    lets a ``RadialBins`` be a static argument of ``jax.jit``; :func:`radial_bins` returns the
    same object for the same (R, n_bins).

    Attributes:
        index: ``(R, R)`` int32, bin of every mode, in ``fft2`` layout.
        centres, lower, upper: ``(n_bins,)`` float64, bin centres and edges, cycles per unit length.
        resolution: R.
        n_bins: number of bins.
    """

    index: np.ndarray
    centres: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    resolution: int
    n_bins: int

    @functools.cached_property
    def one_hot(self) -> np.ndarray:
        """``(R*R, n_bins)`` membership matrix: 1 where mode p (row-major) is in bin b
        (built on first use, then kept with the bins)."""
        table = (self.index.reshape(-1, 1) == np.arange(self.n_bins)).astype(np.float32)
        table.setflags(write=False)
        return table


@functools.lru_cache(maxsize=32)
def radial_bins(resolution: int, n_bins: int) -> RadialBins:
    """``n_bins`` equal-width bins over [0, R/√2]; every mode in exactly one bin
    (:func:`fae_lab.grid.radial_bin_index`: modes on an edge go to the upper bin)."""
    resolution = _check_positive_int("resolution", resolution, 2)
    n_bins = _check_positive_int("--spectral-n-bins", n_bins, 1)
    index = radial_bin_index(resolution, n_bins).astype(np.int32)

    centres, lower, upper = radial_bin_edges(resolution, n_bins)
    arrays = {"index": index, "centres": centres, "lower": lower, "upper": upper}
    for array in arrays.values():
        array.setflags(write=False)
    return RadialBins(**arrays, resolution=resolution, n_bins=n_bins)


def default_cutoff(resolution: int) -> float:
    """The default low/high split |n| = R/4, half the Nyquist frequency."""
    return resolution / 4.0


def resolve_cutoff(resolution: int, cutoff: float | None) -> float:
    """``cutoff`` checked to lie in (0, R/√2], or :func:`default_cutoff` where it is None."""
    if cutoff is None:
        return default_cutoff(resolution)
    limit = resolution / math.sqrt(2.0)
    if not (isinstance(cutoff, (int, float)) and 0.0 < cutoff <= limit):
        raise UsageError(
            f"--spectral-cutoff must be a wavenumber |n| in (0, {limit:.4g}] for resolution "
            f"{resolution} (default {default_cutoff(resolution):g}), got {cutoff!r}"
        )
    return float(cutoff)


def error_power(e: jax.Array) -> jax.Array:
    """Power of every mode, |ê_n|² with ê = fft2(e) / R².

    Args:
        e: ``(..., R, R)`` real field(s).

    Returns:
        ``(..., R, R)`` real, in ``fft2`` layout; sums over the last two axes to mean_xy e².
    """
    e = as_float(e)
    _check_square(e)
    size = e.shape[-1] * e.shape[-2]
    e_hat = jnp.fft.fft2(e) / size
    return (e_hat.real**2 + e_hat.imag**2).astype(e.dtype)


def radial_spectrum(e: jax.Array, bins: RadialBins) -> jax.Array:
    """Radial error spectrum: S_b = Σ_{n in bin b} |ê_n|².

    Args:
        e: ``(..., R, R)`` real field(s), R = ``bins.resolution``.
        bins: from :func:`radial_bins`.

    Returns:
        ``(..., n_bins)``; sums over the last axis to mean_xy e² (Parseval).
    """
    return _bin_power(error_power(e), bins)


def low_high_split(e: jax.Array, cutoff: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """Power below and above a wavenumber cutoff.

    low = Σ_{|n| < cutoff} |ê_n|², high = Σ_{|n| >= cutoff} |ê_n|², so low + high = mean_xy e².

    Args:
        e: ``(..., R, R)`` real field(s).
        cutoff: |n| of the split (a number or a traced scalar); see :func:`default_cutoff`.

    Returns:
        ``(low, high)``, each of shape ``(...)``.
    """
    return _split_power(error_power(e), cutoff)


def evaluation_sums(
    pred: jax.Array,
    target: jax.Array,
    bins: RadialBins,
    cutoff: float | jax.Array,
    valid: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Per-scale sums over test samples, to accumulate over batches.

    With e = pred − target and s running over the (valid) samples of the batch:
    ``sq_err[t] = Σ_s mean_xy e²``, ``sq_target[t] = Σ_s mean_xy u²``,
    ``spectral_err[t, b] = Σ_s S_b(e)``, ``spectral_target[t, b] = Σ_s S_b(u)``,
    ``low[t]``, ``high[t]`` = Σ_s of :func:`low_high_split` of e, and ``count`` = the number of
    samples. Every entry is a sum, so the sums of two batches add to the sums of their union
    (``jax.tree.map(jnp.add, a, b)``).

    Args:
        pred, target: ``(S, T, R, R)``: S samples, T scales.
        bins: from :func:`radial_bins` with R = ``bins.resolution``.
        cutoff: |n| of the low/high split.
        valid: optional ``(S,)`` bool; False marks padding (a fixed-size last batch), which
            contributes nothing, not even to ``count``.

    Returns:
        ``sq_err, sq_target, low, high`` ``(T,)``; ``spectral_err, spectral_target``
        ``(T, n_bins)``; ``count`` scalar; all in the computation's float dtype.
    """
    pred, target = as_float(pred), as_float(target)
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must both be (S, T, R, R); got {pred.shape} and {target.shape}"
        )
    dtype = jnp.result_type(pred.dtype, target.dtype)
    pred, target = pred.astype(dtype), target.astype(dtype)
    error = pred - target
    if valid is None:
        weight = jnp.ones(pred.shape[:1], dtype)
    else:
        weight = jnp.asarray(valid).astype(dtype)
    error_power_ = error_power(error)
    target_power = error_power(target)
    low, high = _split_power(error_power_, cutoff)

    def over_samples(x):  # (S, T, ...) -> (T, ...); padded samples may hold NaN, so select
        mask = weight.reshape(weight.shape + (1,) * (x.ndim - 1)) > 0
        return jnp.sum(jnp.where(mask, x, jnp.zeros((), x.dtype)), axis=0)

    return {
        "sq_err": over_samples(jnp.mean(error**2, axis=(-2, -1))),
        "sq_target": over_samples(jnp.mean(target**2, axis=(-2, -1))),
        "spectral_err": over_samples(_bin_power(error_power_, bins)),
        "spectral_target": over_samples(_bin_power(target_power, bins)),
        "low": over_samples(low),
        "high": over_samples(high),
        "count": jnp.sum(weight),
    }


def evaluation_metrics(
    sums: dict[str, jax.Array], training_scales_mask: jax.Array
) -> dict[str, jax.Array]:
    """The run store's evaluation variables (docs/metrics.md) from accumulated :func:`evaluation_sums`.

    With N = ``count`` test samples and 𝒯 the training scales (``training_scales_mask``):

    - ``eval_scale_mse[t]`` = sq_err[t] / N; ``eval_scale_rel_mse[t]`` = sq_err[t] / sq_target[t]
    - ``eval_mse`` = Σ_{t∈𝒯} sq_err[t] / (N |𝒯|); ``eval_rel_mse`` = Σ_{t∈𝒯} sq_err / Σ_{t∈𝒯} sq_target
      (= Σ e² / Σ u² over those samples and scales, every field having R² points)
    - ``eval_scale_spectral_mse[t, b]`` = spectral_err[t, b] / N (likewise ``..._target``)
    - ``eval_spectral_mse[b]`` = Σ_{t∈𝒯} spectral_err[t, b] / (N |𝒯|), so Σ_b of it = eval_mse
      (likewise ``eval_spectral_target``)
    - ``eval_low_freq_mse``, ``eval_high_freq_mse`` averaged like eval_mse, so they add to it;
      ``eval_high_freq_error_ratio`` = high / (low + high).

    Held-out scales appear in the per-scale variables only. No training scales gives NaN.

    Args:
        sums: as returned by :func:`evaluation_sums` (possibly summed over batches).
        training_scales_mask: ``(T,)`` bool, True for the scales trained on.

    Returns:
        dict of scalars, ``(T,)``, ``(n_bins,)`` and ``(T, n_bins)`` arrays named as above.
    """
    count = jnp.asarray(sums["count"])
    dtype = count.dtype
    mask = jnp.asarray(training_scales_mask).astype(bool)
    n_scales = jnp.sum(mask).astype(dtype)

    def over_training_scales(x):  # (T, ...) -> (...), averaged over samples and training scales
        selected = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
        return jnp.sum(jnp.where(selected, x, jnp.zeros((), x.dtype)), axis=0) / (count * n_scales)

    low = over_training_scales(sums["low"])
    high = over_training_scales(sums["high"])
    sq_err_train = jnp.sum(jnp.where(mask, sums["sq_err"], 0))
    sq_target_train = jnp.sum(jnp.where(mask, sums["sq_target"], 0))
    return {
        "eval_mse": over_training_scales(sums["sq_err"]),
        "eval_rel_mse": sq_err_train / sq_target_train,
        "eval_scale_mse": sums["sq_err"] / count,
        "eval_scale_rel_mse": sums["sq_err"] / sums["sq_target"],
        "eval_spectral_mse": over_training_scales(sums["spectral_err"]),
        "eval_spectral_target": over_training_scales(sums["spectral_target"]),
        "eval_scale_spectral_mse": sums["spectral_err"] / count,
        "eval_scale_spectral_target": sums["spectral_target"] / count,
        "eval_low_freq_mse": low,
        "eval_high_freq_mse": high,
        "eval_high_freq_error_ratio": high / (low + high),
    }


def _bin_power(power: jax.Array, bins: RadialBins) -> jax.Array:
    """``(..., R, R)`` mode powers -> ``(..., n_bins)`` bin sums (a one-hot matmul)."""
    r = bins.resolution
    if power.shape[-2:] != (r, r):
        raise ValueError(f"fields of shape {power.shape} do not match bins for R = {r}")
    flat = power.reshape((*power.shape[:-2], r * r))
    # HIGHEST: on GPUs the default float32 matmul may round the inputs to TF32.
    return jnp.matmul(
        flat, jnp.asarray(bins.one_hot, flat.dtype), precision=jax.lax.Precision.HIGHEST
    )


def _split_power(power: jax.Array, cutoff: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(..., R, R)`` mode powers -> (Σ_{|n| < cutoff}, Σ_{|n| >= cutoff}), each ``(...)``."""
    if isinstance(cutoff, (int, float, np.number)):
        is_low = jnp.asarray(_magnitude(power.shape[-1]) < cutoff)  # decided in float64
    else:
        is_low = jnp.asarray(_magnitude(power.shape[-1]), power.dtype) < cutoff
    is_low = jnp.broadcast_to(is_low, power.shape)
    zero = jnp.zeros((), power.dtype)
    low = jnp.sum(jnp.where(is_low, power, zero), axis=(-2, -1))
    high = jnp.sum(jnp.where(is_low, zero, power), axis=(-2, -1))
    return low, high


@functools.lru_cache(maxsize=32)
def _magnitude(resolution: int) -> np.ndarray:
    magnitude = wavenumber_magnitude(resolution)
    magnitude.setflags(write=False)
    return magnitude


def as_float(x: jax.Array) -> jax.Array:
    """``x`` as an array of at least float32 precision (float64 stays float64)."""
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(x.dtype, jnp.float32))


def _check_square(e: jax.Array) -> None:
    if e.ndim < 2 or e.shape[-1] != e.shape[-2]:
        raise ValueError(f"expected fields of shape (..., R, R), got {e.shape}")


def _check_positive_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
