"""How much of the target's spectrum a run reproduces: learned fraction and resolved bandwidth.

NumPy only (no JAX), so the dashboards (``lab/``), the phase table and notebooks share one
definition. Inputs are the run store's radial spectra (docs/run-store.md): the error power
E(k) = ``eval_spectral_mse`` and the target power T(k) = ``eval_spectral_target`` (over the
training scales), or their per-scale forms ``eval_scale_spectral_mse`` /
``eval_scale_spectral_target``; k runs over the equal-width radial bins of |n| on [0, R/√2].

Learned fraction of bin k:

    L(k) = 1 − E(k) / T(k)

1 where the reconstruction reproduces the bin exactly, 0 where its error carries as much power
as the target (predicting zero there would score 0), negative where it adds more error than
the target has. A bin with T(k) = 0 (no target power: nothing to learn) has no learned
fraction: NaN, and it is skipped by :func:`resolved_bandwidth`.

Resolved bandwidth of one evaluation: the largest |n| up to which L stays ≥ 0.5 (the
threshold), from the lowest bin up. Precisely: walk the bins in order of |n|, skipping NaN
bins; the bandwidth is the *upper edge* ``k_upper[b]`` of the last bin b of the initial run of
bins with L ≥ 0.5. Upper edges, not centres, because every mode below that edge lies in a bin
that passed. If the lowest (non-NaN) bin already fails, the bandwidth is 0; if every bin
passes, it is the top edge R/√2; if every bin is NaN (no target power, or an evaluation not yet
written), it is NaN.
"""

from __future__ import annotations

import numpy as np

LEARNED_THRESHOLD = 0.5  # a bin counts as resolved while at least half its power is reproduced

__all__ = ["LEARNED_THRESHOLD", "learned_fraction", "resolved_bandwidth"]


def learned_fraction(error_power, target_power) -> np.ndarray:
    """L = 1 − E / T per bin, NaN where T ≤ 0 or either input is NaN.

    Args:
        error_power: E, ``(..., n_bins)`` (e.g. ``eval_spectral_mse``, ``(n_eval, n_bins)``, or
            ``eval_scale_spectral_mse``, ``(n_eval, T, n_bins)``).
        target_power: T, broadcastable against ``error_power``.

    Returns:
        float64 array of the broadcast shape.
    """
    error = np.asarray(error_power, dtype=np.float64)
    target = np.asarray(target_power, dtype=np.float64)
    has_power = target > 0  # NaN compares False, so unwritten rows are NaN too
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = 1.0 - error / np.where(has_power, target, 1.0)
    return np.where(has_power, fraction, np.nan)


def resolved_bandwidth(fraction, k_upper, threshold: float = LEARNED_THRESHOLD) -> np.ndarray:
    """Largest |n| up to which the learned fraction stays ≥ ``threshold`` (module docstring).

    Args:
        fraction: L, ``(..., n_bins)``, bins in increasing |n| (as the store orders them).
        k_upper: ``(n_bins,)`` upper bin edges (the store's ``k_upper`` coordinate).
        threshold: the fraction a bin must reach, default 0.5.

    Returns:
        ``(...)`` float64: ``k_upper`` of the last bin of the initial run of passing bins
        (NaN bins skipped), 0 when the lowest bin fails, NaN when every bin is NaN.
    """
    fraction = np.asarray(fraction, dtype=np.float64)
    k_upper = np.asarray(k_upper, dtype=np.float64)
    if fraction.ndim == 0 or k_upper.shape != fraction.shape[-1:]:
        raise ValueError(f"fraction (..., n_bins) and k_upper (n_bins,) do not match: "
                         f"{fraction.shape} and {k_upper.shape}")
    known = ~np.isnan(fraction)
    # A bin breaks the run when it is known and below the threshold; NaN bins neither break
    # nor extend it.
    fails = known & (fraction < threshold)
    passed_so_far = np.cumsum(fails, axis=-1) == 0  # True up to (excluding) the first failure
    resolved = passed_so_far & known
    # Upper edge of the last resolved bin of the initial run, 0 when there is none.
    edges = np.where(resolved, k_upper, 0.0)
    bandwidth = edges.max(axis=-1, initial=0.0)
    return np.where(known.any(axis=-1), bandwidth, np.nan)
