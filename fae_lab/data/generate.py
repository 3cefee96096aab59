"""Periodic random two-phase microstructures, filtered exactly in Fourier space.

Scale 0 is the sharp microstructure u_0: a matrix (value 0) holding inclusions (value
``contrast``), disks and randomly oriented ellipses of many sizes, placed on the torus [0, 1)^2
with minimum-image distances so that an inclusion crossing an edge continues on the opposite
edge. Each pixel is the inclusion area fraction of its cell, measured on an s x s subgrid
(s = ``supersampling``, 4 by default) and average-pooled, which anti-aliases the boundaries.

Scale t is the exact Gaussian filter of width sigma_t (domain lengths) of u_0:

    u_t^(n) = exp(-sigma_t^2 |2 pi n|^2 / 2) u_0^(n),    n integer wavenumbers,

with scale parameter t = sigma_t^2 / 2 (the heat equation with unit diffusivity run for time t).
The filter is band-limited to the grid's modes, so for sigma below about a grid cell it rings a
little at sharp edges (values may leave [0, contrast] by a few per cent of the contrast).

Inclusions follow a Boolean model: per sample a Poisson number of inclusions with rate lambda,
uniform centres, radius r log-uniform on ``radius_range`` (area pi r^2; an ellipse of aspect
q has semi-axes r sqrt(q) and r / sqrt(q), so the same area), overlaps allowed. A point is
then matrix with probability exp(-lambda pi E[r^2]); lambda is chosen so that the expected
inclusion fraction equals ``volume_fraction``.

NumPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fae_lab.data.npz import MultiscaleData, validate_arrays
from fae_lab.errors import UsageError
from fae_lab.grid import wavenumber_magnitude

LARGEST_RADIUS = 0.15  # domain lengths; the largest inclusions span ~1/3 of the domain
SMALLEST_RADIUS_CELLS = 1.5  # grid cells; smaller inclusions would be a pixel or two
_BOX_ELEMENTS = 1 << 22  # subgrid points evaluated per vectorised block (memory bound)
_SAMPLE_CHUNK = 64


def default_sigmas(n_scales: int, resolution: int) -> np.ndarray:
    """The default sigma ladder, ``(T,)`` float64, domain lengths.

    sigma_0 = 0 (the unfiltered microstructure), then T - 1 widths geometric from half a grid
    cell, 0.5 / R (the Nyquist mode keeps exp(-pi^2 / 8) = 29 % of its amplitude), to 1/8 of the
    domain (only |n| <~ 3 survive). T = 2 gives (0, 0.5 / R).
    """
    if n_scales < 1:
        raise UsageError(f"--n-scales: expected an integer >= 1, got {n_scales}")
    filtered = np.geomspace(0.5 / resolution, 0.125, n_scales - 1) if n_scales > 1 else []
    return np.concatenate([[0.0], filtered]).astype(np.float64)


def gaussian_filter_fourier(fields: np.ndarray, sigma: float) -> np.ndarray:
    """Exact periodic Gaussian filter of width ``sigma`` (domain lengths) of ``(..., R, R)``.

    u^(n) -> exp(-sigma^2 |2 pi n|^2 / 2) u^(n) for the integer wavenumbers n of the grid;
    computed in float64, returned in the input's float dtype (float32 for anything else).
    """
    fields = np.asarray(fields)
    if fields.ndim < 2 or fields.shape[-1] != fields.shape[-2]:
        raise ValueError(f"expected fields of shape (..., R, R), got {fields.shape}")
    dtype = fields.dtype if fields.dtype in (np.float32, np.float64) else np.float32
    return filter_scales(fields, np.asarray([sigma], dtype=np.float64))[..., 0, :, :].astype(dtype)


def filter_scales(fields: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Every Gaussian filter of ``sigmas`` ``(T,)`` of ``fields`` ``(..., R, R)`` -> ``(..., T, R, R)``.

    One forward FFT, T multipliers exp(-sigma_t^2 |2 pi n|^2 / 2), T inverse FFTs; float64.
    """
    resolution = fields.shape[-1]
    # rfft2 keeps columns n_x = 0..R/2; fftfreq's first R//2 + 1 columns have the same |n|^2
    # (only the sign of n_x = -R/2 differs).
    n_squared = wavenumber_magnitude(resolution)[:, : resolution // 2 + 1] ** 2
    sigmas = np.asarray(sigmas, dtype=np.float64)
    multipliers = np.exp(-0.5 * (2 * np.pi) ** 2 * sigmas[:, None, None] ** 2 * n_squared)
    spectrum = np.fft.rfft2(np.asarray(fields, dtype=np.float64))[..., None, :, :]
    return np.fft.irfft2(spectrum * multipliers, s=(resolution, resolution))


@dataclass(frozen=True, eq=False)
class Inclusions:
    """M inclusions: ``sample`` (M,) owner, ``centres`` (M, 2) as (x, y), ``semi_axes`` (M, 2)
    as (a, b) in domain lengths, ``angles`` (M,) of the a-axis from the x-axis, radians."""

    sample: np.ndarray
    centres: np.ndarray
    semi_axes: np.ndarray
    angles: np.ndarray


def random_inclusions(rng: np.random.Generator, n_samples: int, volume_fraction: float,
                      radius_range: tuple[float, float], ellipse_fraction: float = 0.5,
                      aspect_range: tuple[float, float] = (1.5, 3.0)) -> Inclusions:
    """Draw the Boolean model of the module docstring, sorted by sample.

    Rate lambda = -log(1 - volume_fraction) / (pi E[r^2]) with, for r log-uniform on
    [r_0, r_1], E[r^2] = (r_1^2 - r_0^2) / (2 log(r_1 / r_0)).
    """
    r_0, r_1 = radius_range
    mean_r2 = r_0**2 if r_1 == r_0 else (r_1**2 - r_0**2) / (2 * math.log(r_1 / r_0))
    rate = -math.log1p(-volume_fraction) / (math.pi * mean_r2)
    counts = rng.poisson(rate, n_samples)
    total = int(counts.sum())
    sample = np.repeat(np.arange(n_samples), counts)
    centres = rng.random((total, 2))
    radius = np.exp(rng.uniform(math.log(r_0), math.log(r_1), total))
    aspect = np.where(rng.random(total) < ellipse_fraction,
                      rng.uniform(aspect_range[0], aspect_range[1], total), 1.0)
    semi_axes = np.stack([radius * np.sqrt(aspect), radius / np.sqrt(aspect)], axis=-1)
    angles = rng.uniform(0.0, np.pi, total)
    return Inclusions(sample, centres, semi_axes, angles)


def render_inclusions(inclusions: Inclusions, n_samples: int, resolution: int,
                      supersampling: int = 4) -> np.ndarray:
    """Inclusion area fraction of every grid cell, ``(N, R, R)`` float64 in [0, 1].

    Cell (iy, ix) is centred on its grid point (ix / R, iy / R); it is covered by s x s
    subgrid points, and a subgrid point p is inside inclusion (c, a, b, theta) when the
    minimum-image displacement d = p - c - round(p - c) satisfies
    (d . e_a)^2 / a^2 + (d . e_b)^2 / b^2 <= 1. Each inclusion is tested only on a square box
    of subgrid points around it (boxes are bucketed by power-of-two size and vectorised).
    """
    out = np.empty((n_samples, resolution, resolution))
    for lo in range(0, n_samples, _SAMPLE_CHUNK):
        hi = min(lo + _SAMPLE_CHUNK, n_samples)
        members = slice(*np.searchsorted(inclusions.sample, [lo, hi]))
        covered = _cover_subgrid(inclusions, members, lo, hi - lo, resolution * supersampling,
                                 supersampling)
        pooled = covered.reshape(hi - lo, resolution, supersampling, resolution, supersampling)
        out[lo:hi] = pooled.sum(axis=(2, 4), dtype=np.int32) / supersampling**2
    return out


def _cover_subgrid(inc: Inclusions, members: slice, first_sample: int, n_samples: int,
                   size: int, supersampling: int) -> np.ndarray:
    covered = np.zeros((n_samples, size, size), dtype=bool)
    sample = inc.sample[members] - first_sample
    cx, cy = inc.centres[members, 0], inc.centres[members, 1]
    a, b = inc.semi_axes[members, 0], inc.semi_axes[members, 1]
    cos, sin = np.cos(inc.angles[members]), np.sin(inc.angles[members])
    # Quadratic form of the ellipse: A dx^2 + 2 B dx dy + C dy^2 <= 1.
    quad_a = cos**2 / a**2 + sin**2 / b**2
    quad_b = cos * sin * (1 / a**2 - 1 / b**2)
    quad_c = sin**2 / a**2 + cos**2 / b**2
    half_extent = np.maximum(np.hypot(a * cos, b * sin), np.hypot(a * sin, b * cos)) * size
    box = np.minimum(2 ** np.ceil(np.log2(2 * half_extent + 2)), size).astype(np.int64)
    offset = (supersampling - 1) / 2  # subgrid point j sits at (j - offset) / size
    for box_size in np.unique(box):
        chosen = np.flatnonzero(box == box_size)
        per_block = max(1, _BOX_ELEMENTS // int(box_size) ** 2)
        steps = np.arange(box_size)
        for begin in range(0, chosen.size, per_block):
            m = chosen[begin: begin + per_block]
            jx = np.rint(cx[m] * size + offset).astype(np.int64)[:, None] - box_size // 2 + steps
            jy = np.rint(cy[m] * size + offset).astype(np.int64)[:, None] - box_size // 2 + steps
            dx = (jx - offset) / size - cx[m, None]
            dy = (jy - offset) / size - cy[m, None]
            dx -= np.rint(dx)
            dy -= np.rint(dy)
            # Per-axis factors (M, S) first, so the (M, S, S) box costs one product, two sums.
            form = (2 * quad_b[m, None] * dx)[:, None, :] * dy[:, :, None]
            form += (quad_a[m, None] * dx**2)[:, None, :]
            form += (quad_c[m, None] * dy**2)[:, :, None]
            which, iy, ix = np.nonzero(form <= 1.0)
            covered[sample[m][which], jy[which, iy] % size, jx[which, ix] % size] = True
    return covered


def generate_microstructures(
    n_samples: int = 256,
    resolution: int = 64,
    n_scales: int = 6,
    seed: int = 0,
    *,
    sigmas: tuple[float, ...] | np.ndarray | None = None,
    contrast: float = 1.0,
    volume_fraction: float = 0.3,
    held_out_indices: tuple[int, ...] | None = None,
    radius_range: tuple[float, float] | None = None,
    ellipse_fraction: float = 0.5,
    aspect_range: tuple[float, float] = (1.5, 3.0),
    supersampling: int = 4,
) -> MultiscaleData:
    """N periodic two-phase microstructures at T scales, ``fields`` ``(N, T, R, R)`` float32.

    ``sigmas`` ``(T,)``: filter widths, starting at 0 and increasing (default
    :func:`default_sigmas`); ``times`` = sigmas^2 / 2. ``radius_range`` defaults to
    (min(1.5 / R, 0.075), 0.15). The same arguments give the same fields, bit for bit.
    """
    _check(n_samples >= 2, f"--n-samples: expected an integer >= 2, got {n_samples}")
    _check(resolution >= 8, f"--resolution: expected an integer >= 8, got {resolution}")
    _check(supersampling >= 1, f"supersampling: expected an integer >= 1, got {supersampling}")
    _check(0 < volume_fraction < 1,
           f"--volume-fraction: expected a number in (0, 1), got {volume_fraction}")
    _check(math.isfinite(contrast) and contrast != 0,
           f"--contrast: expected a finite non-zero number, got {contrast}")
    sigmas = _sigma_ladder(sigmas, n_scales, resolution)
    if radius_range is None:
        radius_range = (min(SMALLEST_RADIUS_CELLS / resolution, LARGEST_RADIUS / 2), LARGEST_RADIUS)
    r_0, r_1 = radius_range
    _check(0 < r_0 <= r_1 and r_1 * math.sqrt(aspect_range[1]) < 0.5,
           f"--radius-range: expected 0 < r0 <= r1 with ellipses inside half the domain, got {radius_range}")
    _check(1 <= aspect_range[0] <= aspect_range[1],
           f"aspect_range: expected 1 <= q0 <= q1, got {aspect_range}")

    rng = np.random.default_rng(seed)
    inclusions = random_inclusions(rng, n_samples, volume_fraction, (r_0, r_1),
                                   ellipse_fraction, aspect_range)
    sharp = render_inclusions(inclusions, n_samples, resolution, supersampling)
    fields = np.empty((n_samples, sigmas.size, resolution, resolution), dtype=np.float32)
    for lo in range(0, n_samples, _SAMPLE_CHUNK):
        fields[lo: lo + _SAMPLE_CHUNK] = contrast * filter_scales(sharp[lo: lo + _SAMPLE_CHUNK],
                                                                  sigmas)
    fields[:, 0] = contrast * sharp  # sigma_0 = 0: the exact pixel fractions, no FFT round-off
    source = (f"generated(n_samples={n_samples}, resolution={resolution}, "
              f"n_scales={sigmas.size}, seed={seed}, contrast={contrast}, "
              f"volume_fraction={volume_fraction})")
    arrays = {"fields": fields, "resolution": np.int64(resolution),
              "times": sigmas**2 / 2, "sigmas": sigmas}
    if held_out_indices is not None:
        arrays["held_out_indices"] = np.asarray(held_out_indices, dtype=np.int64)
    try:
        return validate_arrays(arrays, source)
    except UsageError as err:
        if getattr(err, "key", None) == "held_out_indices":
            raise UsageError(f"--held-out-indices: {err.expected}") from None
        raise


def _sigma_ladder(sigmas, n_scales: int, resolution: int) -> np.ndarray:
    if sigmas is None:
        return default_sigmas(n_scales, resolution)
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    _check(sigmas.size == n_scales,
           f"--sigmas: got {sigmas.size} values but --n-scales is {n_scales}")
    _check(bool(np.isfinite(sigmas).all()) and sigmas[0] == 0 and bool(np.all(np.diff(sigmas) > 0)),
           "--sigmas: expected 0 (scale 0 is the unfiltered microstructure) followed by "
           f"increasing widths, got {','.join(f'{s:g}' for s in sigmas)}")
    return sigmas


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)
