"""Measured per-band learning rates and how well the NTK predicts them (NumPy only).

The linearised model predicts that the error in a mode decays like exp(−η λ t). From the run
store's spectral error curves, E_b(t) = ``eval_spectral_mse[t, b]`` (error power in |n| bin b
at evaluation step t), the measured rate of band b is the least-squares slope of

    log E_b(t) ≈ c_b − r_b t,          t in the fit window [t_0, t_1],

so r_b > 0 is a band being learned (per step). The window defaults to the first half of the
evaluated steps, where the kernel is closest to the one measured at the start; evaluations with
a non-finite or non-positive error are left out of a band's fit (fewer than two left: NaN).
The NTK rate of band b is the shell average of ρ(n) = f_nᴴ K f_n over the bin
(:mod:`fae_lab.ntk.model`); how well it predicts r_b is their Spearman rank correlation across
bins (scale-free: η, the loss normalisation and the optimiser's preconditioning drop out of
the ranking, Adam's only approximately).
"""

from __future__ import annotations

import numpy as np


def default_window(steps: np.ndarray) -> tuple[float, float]:
    """``(first step, half the last step)`` of the evaluated ``steps``."""
    steps = np.asarray(steps, np.float64)
    if steps.size == 0:
        return (0.0, 0.0)
    return (float(steps.min()), float(steps.min() + 0.5 * (steps.max() - steps.min())))


def band_decay_rates(steps: np.ndarray, error: np.ndarray,
                     window: tuple[float, float] | None = None) -> np.ndarray:
    """Rates r_b = −d log E_b / dt fitted over ``window`` (inclusive; default
    :func:`default_window`): ``steps (E,)``, ``error (E, B)`` -> ``(B,)``."""
    steps = np.asarray(steps, np.float64)
    error = np.asarray(error, np.float64)
    if error.ndim != 2 or error.shape[0] != steps.shape[0]:
        raise ValueError(f"band rates: expected steps (E,) and error (E, B), got {steps.shape}, {error.shape}")
    lo, hi = default_window(steps) if window is None else window
    rates = np.full(error.shape[1], np.nan)
    in_window = (steps >= lo) & (steps <= hi)
    for b in range(error.shape[1]):
        with np.errstate(divide="ignore", invalid="ignore"):
            use = in_window & np.isfinite(error[:, b]) & (error[:, b] > 0)
        t, y = steps[use], np.log(error[use, b])
        if len(t) < 2 or np.ptp(t) == 0:
            continue
        t_centred = t - t.mean()
        rates[b] = -np.sum(t_centred * (y - y.mean())) / np.sum(t_centred**2)
    return rates


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..m of ``values (m,)``, ties sharing their mean rank."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` over the entries where both are finite
    (NaN with fewer than three such entries or a constant one)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3:
        return float("nan")
    ra, rb = ranks(a[both]), ranks(b[both])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt(np.sum(ra**2) * np.sum(rb**2))
    return float(np.sum(ra * rb) / denominator) if denominator > 0 else float("nan")


def nearest_index(values: np.ndarray, target: float) -> int:
    """Index of the entry of ``values`` closest to ``target`` (the first on a tie)."""
    return int(np.argmin(np.abs(np.asarray(values, np.float64) - target)))


class RateComparison:
    """Predicted (NTK) against measured per-band rates of one run.

    ``measured (B,)``: :func:`band_decay_rates` over ``window``; ``predicted (B,)``: the NTK
    rates of the NTK step nearest the window's start (``ntk_step``); ``spearman``: their rank
    correlation across bins.
    """

    def __init__(self, eval_steps: np.ndarray, error: np.ndarray, ntk_steps: np.ndarray,
                 ntk_rates: np.ndarray, window: tuple[float, float] | None = None):
        self.window = default_window(eval_steps) if window is None else window
        self.measured = band_decay_rates(eval_steps, error, self.window)
        index = nearest_index(ntk_steps, self.window[0])
        self.ntk_step = int(np.asarray(ntk_steps)[index])
        self.predicted = np.asarray(ntk_rates, np.float64)[index]
        self.spearman = spearman(self.predicted, self.measured)
