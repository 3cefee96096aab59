"""What the NTK's numbers say about frequency: shell averages and eigenvector centroids
(NumPy only, so the dashboards may use it).

Modes are laid out as ``numpy.fft.fft2`` lays them out on the R x R grid, |n| the mode's
magnitude in cycles per unit length (:func:`fae_lab.grid.wavenumber_magnitude`).
"""

from __future__ import annotations

import numpy as np

from fae_lab.grid import radial_bin_index, wavenumber_magnitude


def shell_average(table: np.ndarray, n_bins: int) -> np.ndarray:
    """Mean of ``table (R, R)`` (fft2 layout) over the modes of each radial |n| bin of the run
    store's bins (docs/metrics.md), ignoring NaN (modes not computed): ``(n_bins,)``, NaN for a
    bin with no computed mode."""
    table = np.asarray(table, np.float64)
    index = radial_bin_index(table.shape[-1], n_bins).ravel()
    values = table.ravel()
    finite = np.isfinite(values)
    sums = np.bincount(index[finite], values[finite], minlength=n_bins)
    counts = np.bincount(index[finite], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def spectral_centroid(vectors: np.ndarray, resolution: int) -> np.ndarray:
    """Power-weighted mean |n| of each field's 2-D DFT: ``vectors (m, R*R)`` (grid row-major,
    y then x) -> ``(m,)``, Σ_n |n| |v̂_n|² / Σ_n |v̂_n|² (NaN for a zero vector)."""
    R = resolution
    fields = np.asarray(vectors, np.float64).reshape(-1, R, R)
    power = np.abs(np.fft.fft2(fields)) ** 2
    magnitude = wavenumber_magnitude(R)
    total = power.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (power * magnitude).sum(axis=(-2, -1)) / total
