"""Training losses on fields of the periodic R x R grid, one term at a time.

With e = pred − target on the grid and ê = fft2(e) / R² (so Σ_n |ê_n|² = mean_xy e², mode n
from :mod:`fae_lab.grid`), the data losses are, averaged over the batch:

- ``l2``:                mean e²
- ``h1``:                mean e² + λ_grad · G(e), G one of the two gradient terms below
- ``fourier_weighted``:  Σ_n w_n |ê_n|²,  w_n = max(|n|, 1)^p / mean_m max(|m|, 1)^p
- ``combined``:          Σ_n w_n |ê_n|² + λ_grad · G(e)   (the seed's H¹ + Fourier weighting)

Gradient term G, ``h1_form``:

- ``"finite_difference"``: G = mean((δx e)² + (δy e)²), periodic central differences in grid
  units, δx e[i, j] = (e[i, j+1] − e[i, j−1]) / 2. Its symbol is i·sin(2πnx/R), so
  G = Σ_n (sin²(2πnx/R) + sin²(2πny/R)) |ê_n|²: it has zero response at the Nyquist mode
  (a checkerboard error costs nothing) and falls off above |n| ≈ R/4.
- ``"spectral"``: G = Σ_n (|n|/k0)² |ê_n|², with k0 = R/(2π) by default, which makes it agree
  with the finite-difference form at low |n| (sin x ≈ x) and keep rising up to Nyquist and the
  corners. ‖e‖²_{H¹} = Σ_n (1 + |n|²/k0²) |ê_n|² is then exactly l2 + G.

Every term is returned on its own and already weighted, so the terms sum to the data loss and
can be logged as ``train_loss_<term>``. Which terms a loss returns, whether it needs the full
grid and which settings it reads are its row of :data:`fae_lab.variants.LOSSES`; its code is one
function here, registered with ``@loss_terms(name)`` (docs/architecture.md, "Adding a loss"). The hyperparameters a sweep varies (``lambda_grad``,
``freq_weight_power``, ``beta``, ``k0``) are ordinary (traceable, vmappable) arguments;
``loss_type`` and ``h1_form`` are static Python strings. All jax.numpy, jittable, float32 or
float64 (lower precisions are computed in float32).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fae_lab import variants
from fae_lab.config import H1_FORMS
from fae_lab.errors import UsageError
from fae_lab.grid import integer_wavenumbers, wavenumber_magnitude
from fae_lab.spectral import as_float, error_power

__all__ = [
    "LossParameters",
    "field_loss_terms",
    "finite_difference_gradient_energy",
    "fourier_weighted_error",
    "latent_penalty",
    "loss_term_names",
    "loss_terms",
    "point_l2",
    "requires_full_grid",
    "spectral_gradient_energy",
]



class LossParameters(NamedTuple):
    """The settings a loss's term function may read: traced (``lambda_grad``,
    ``freq_weight_power``) or static (``h1_form``, ``k0``); see :func:`field_loss_terms`."""

    lambda_grad: float | jax.Array
    freq_weight_power: float | jax.Array
    h1_form: str = "finite_difference"
    k0: float | jax.Array | None = None


TermFunction = Callable[[jax.Array, LossParameters], dict[str, jax.Array]]
_TERM_FUNCTIONS: dict[str, TermFunction] = {}


def loss_terms(name: str) -> Callable[[TermFunction], TermFunction]:
    """Register the term function of the loss ``name`` (a row of :data:`fae_lab.variants.LOSSES`):
    ``(error (B, R, R), LossParameters) -> {term: scalar}`` with exactly the row's terms."""

    def register(function: TermFunction) -> TermFunction:
        if name in _TERM_FUNCTIONS:
            raise ValueError(f"loss {name!r} already has a term function")
        _TERM_FUNCTIONS[name] = function
        return function

    return register


def loss_term_names(loss_type: str) -> tuple[str, ...]:
    """Names of the data-loss terms of ``loss_type``, in the order they are logged."""
    return variants.loss_variant(loss_type).terms


def requires_full_grid(loss_type: str) -> bool:
    """Whether ``loss_type`` needs whole R x R fields: only l2 is defined on scattered points."""
    return variants.loss_variant(loss_type).full_grid


def field_loss_terms(
    pred: jax.Array,
    target: jax.Array,
    *,
    loss_type: str,
    lambda_grad: float | jax.Array,
    freq_weight_power: float | jax.Array,
    h1_form: str = "finite_difference",
    k0: float | jax.Array | None = None,
) -> dict[str, jax.Array]:
    """The data-loss terms of ``loss_type`` for a batch of whole fields (see the module doc).

    Args:
        pred, target: ``(B, R, R)`` fields on the periodic grid.
        loss_type: a name of :data:`fae_lab.variants.LOSSES` (static).
        lambda_grad: λ_grad, weight of the gradient term (h1, combined).
        freq_weight_power: p of the Fourier weights (fourier_weighted, combined).
        h1_form: ``finite_difference`` | ``spectral`` (static), the gradient term G.
        k0: reference wavenumber of the spectral form; None gives R / (2π).

    Returns:
        scalars keyed by :func:`loss_term_names`: ``l2`` = mean e², ``grad`` = λ_grad · G(e),
        ``fourier`` = Σ_n w_n |ê_n|², each averaged over the batch; they sum to the data loss.
    """
    names = loss_term_names(loss_type)
    _check_choice("--h1-form", h1_form, H1_FORMS)
    error = _field_error(pred, target)
    terms = _TERM_FUNCTIONS[loss_type](
        error, LossParameters(lambda_grad, freq_weight_power, h1_form, k0))
    if tuple(terms) != names:  # the table and the code must agree, or the store's names lie
        raise ValueError(f"loss {loss_type!r} returned terms {tuple(terms)}, its row says {names}")
    return terms


@loss_terms("l2")
def _l2(error: jax.Array, p: LossParameters) -> dict[str, jax.Array]:
    return {"l2": jnp.mean(error**2)}


@loss_terms("h1")
def _h1(error: jax.Array, p: LossParameters) -> dict[str, jax.Array]:
    return {"l2": jnp.mean(error**2), "grad": gradient_term(error, p)}


@loss_terms("fourier_weighted")
def _fourier_weighted(error: jax.Array, p: LossParameters) -> dict[str, jax.Array]:
    return {"fourier": fourier_weighted_error(error, p.freq_weight_power)}


@loss_terms("combined")
def _combined(error: jax.Array, p: LossParameters) -> dict[str, jax.Array]:
    """Both terms from one spectrum |ê_n|²: G of either form is Σ_n s_n |ê_n|² (Parseval; the
    finite difference's symbol s_n, module doc), so the gradient term costs no FFT and no
    shifted copies of e of its own (one FFT forward, one back in the gradient)."""
    power, R = error_power(error), error.shape[-1]
    gradient = _mean_weighted_sum(power, _gradient_symbol(R, p.h1_form, p.k0, error.dtype))
    return {"fourier": _mean_weighted_sum(power, _fourier_weights(R, p.freq_weight_power, error.dtype)),
            "grad": jnp.asarray(p.lambda_grad, error.dtype) * gradient}


def gradient_term(error: jax.Array, p: LossParameters) -> jax.Array:
    """λ_grad · G(e), G of the form ``p.h1_form`` (module doc). ``error``: ``(B, R, R)``."""
    if p.h1_form == "spectral":
        gradient = spectral_gradient_energy(error, p.k0)
    else:
        gradient = finite_difference_gradient_energy(error)
    return jnp.asarray(p.lambda_grad, error.dtype) * gradient


def finite_difference_gradient_energy(error: jax.Array) -> jax.Array:
    """G_FD = mean over batch and points of (δx e)² + (δy e)², periodic central differences.

    δx e[i, j] = (e[i, j+1] − e[i, j−1]) / 2 in grid units (likewise δy along rows); zero on
    the Nyquist mode. ``error``: ``(B, R, R)``; returns a scalar.
    """
    dx = (jnp.roll(error, -1, axis=-1) - jnp.roll(error, 1, axis=-1)) / 2
    dy = (jnp.roll(error, -1, axis=-2) - jnp.roll(error, 1, axis=-2)) / 2
    return jnp.mean(dx**2 + dy**2)


def spectral_gradient_energy(error: jax.Array, k0: float | jax.Array | None = None) -> jax.Array:
    """G_spec = mean over batch of Σ_n (|n| / k0)² |ê_n|²; k0 = R / (2π) where None.

    ``error``: ``(B, R, R)``; returns a scalar.
    """
    return _weighted_power(error, _gradient_symbol(error.shape[-1], "spectral", k0, error.dtype))


def fourier_weighted_error(error: jax.Array, power: float | jax.Array) -> jax.Array:
    """Mean over batch of Σ_n w_n |ê_n|², w_n = max(|n|, 1)^p / mean_m max(|m|, 1)^p.

    The weights have unit mean over the R² modes, so p = 0 is exactly mean e² and a larger p
    moves weight from low |n| to high |n|. ``error``: ``(B, R, R)``; returns a scalar.
    """
    return _weighted_power(error, _fourier_weights(error.shape[-1], power, error.dtype))


def _fourier_weights(resolution: int, power: float | jax.Array, dtype) -> jax.Array:
    """w_n = max(|n|, 1)^p / mean_m max(|m|, 1)^p, ``(R, R)`` in fft2 layout."""
    weights = jnp.exp(jnp.asarray(power, dtype) * jnp.asarray(_log_clipped_magnitude(resolution), dtype))
    return weights / jnp.mean(weights)


def point_l2(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean over samples and points of (pred − target)², for decoder point subsets ``(B, P)``."""
    return jnp.mean(_field_error(pred, target, grid=False) ** 2)


def latent_penalty(z: jax.Array, beta: float | jax.Array) -> jax.Array:
    """The FAE penalty β ‖z‖², averaged over the batch: β · mean_b Σ_i z_{b,i}² for ``(B, L)``."""
    z = as_float(z)
    return jnp.asarray(beta, z.dtype) * jnp.mean(jnp.sum(z**2, axis=-1))


def _weighted_power(error: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean over batch of Σ_n weights_n |ê_n|² for ``(B, R, R)`` errors, ``(R, R)`` weights."""
    return _mean_weighted_sum(error_power(error), weights)


def _mean_weighted_sum(power: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean over batch of Σ_n weights_n power_n for ``(B, R, R)`` powers |ê_n|²."""
    return jnp.mean(jnp.sum(power * weights[None, :, :], axis=(-2, -1)))


def _gradient_symbol(resolution: int, h1_form: str, k0: float | jax.Array | None, dtype) -> jax.Array:
    """s_n with G = Σ_n s_n |ê_n|²: (|n| / k0)² (``spectral``, k0 = R / (2π) where None), or
    the central differences' sin²(2π nx / R) + sin²(2π ny / R) (``finite_difference``)."""
    if h1_form != "spectral":
        return jnp.asarray(_difference_symbol(resolution), dtype)
    if k0 is None:
        k0 = resolution / (2 * np.pi)
    return jnp.asarray(_n_squared(resolution), dtype) / jnp.asarray(k0, dtype) ** 2


@functools.lru_cache(maxsize=32)
def _n_squared(resolution: int) -> np.ndarray:
    return _read_only(wavenumber_magnitude(resolution) ** 2)


@functools.lru_cache(maxsize=32)
def _difference_symbol(resolution: int) -> np.ndarray:
    """sin²(2π nx / R) + sin²(2π ny / R): |symbol|² of the periodic central differences of
    :func:`finite_difference_gradient_energy`, so that G_FD = Σ_n s_n |ê_n|²."""
    ny, nx = integer_wavenumbers(resolution)
    return _read_only(np.sin(2 * np.pi * nx / resolution) ** 2 + np.sin(2 * np.pi * ny / resolution) ** 2)


@functools.lru_cache(maxsize=32)
def _log_clipped_magnitude(resolution: int) -> np.ndarray:
    return _read_only(np.log(np.maximum(wavenumber_magnitude(resolution), 1.0)))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # shared through the cache
    return array


def _field_error(pred: jax.Array, target: jax.Array, grid: bool = True) -> jax.Array:
    pred, target = as_float(pred), as_float(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    if grid and (pred.ndim != 3 or pred.shape[-1] != pred.shape[-2]):
        raise ValueError(f"expected a batch of fields (B, R, R), got {pred.shape}")
    dtype = jnp.result_type(pred.dtype, target.dtype)
    return pred.astype(dtype) - target.astype(dtype)


def _check_choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
