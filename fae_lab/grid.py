"""The periodic R x R grid over [0, 1)^2: coordinates and integer wavenumbers.

NumPy only, so the data tools and the run store can use it without JAX.
Grid point (iy, ix) sits at x = ix / R, y = iy / R; flattened point p = iy * R + ix.
Mode n = (nx, ny) has integer components from ``fftfreq(R) * R`` (cycles per unit length).
"""

from __future__ import annotations

import numpy as np


def grid_coordinates(resolution: int) -> np.ndarray:
    """Coordinates of every grid point, ``(R*R, 2)`` float32, columns ``(x, y)``."""
    axis = np.arange(resolution, dtype=np.float32) / resolution
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=-1)


def integer_wavenumbers(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ny, nx)``, each ``(R, R)`` float64, laid out like ``fft2`` output of ``u[y, x]``."""
    n = np.fft.fftfreq(resolution) * resolution
    ny, nx = np.meshgrid(n, n, indexing="ij")
    return ny, nx


def wavenumber_magnitude(resolution: int) -> np.ndarray:
    """|n| = sqrt(nx^2 + ny^2) for every mode, ``(R, R)`` float64."""
    ny, nx = integer_wavenumbers(resolution)
    return np.sqrt(nx**2 + ny**2)


def radial_bin_edges(resolution: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_bins`` equal-width bins of |n| over [0, R/sqrt(2)] (docs/metrics.md).

    Returns ``(centres, lower, upper)``, each ``(n_bins,)`` float64, in cycles per unit length.
    Which mode falls in which bin is :func:`radial_bin_index`.
    """
    edges = np.linspace(0.0, resolution / np.sqrt(2.0), n_bins + 1)
    return 0.5 * (edges[:-1] + edges[1:]), edges[:-1].copy(), edges[1:].copy()


def radial_bin_index(resolution: int, n_bins: int) -> np.ndarray:
    """Bin of every mode, ``(R, R)`` int64 in ``fft2`` layout, for :func:`radial_bin_edges`.

    Decided in integers (edge b is at b·R/(√2·n_bins), so |n| >= edge b iff
    2·n_bins²·|n|² >= b²·R²), so modes lying exactly on an edge, such as (2, 2) for R = 64,
    n_bins = 16, go to the upper bin on every platform; the corner modes |n| = R/√2 go to
    the last bin.
    """
    ny, nx = integer_wavenumbers(resolution)
    n_squared = (nx**2 + ny**2).round().astype(np.int64)  # fftfreq(R)*R is not exact for every R
    edges_squared = (np.arange(1, n_bins + 1, dtype=np.int64) * resolution) ** 2
    index = np.searchsorted(edges_squared, 2 * n_bins**2 * n_squared, side="right")
    return np.minimum(index, n_bins - 1)
