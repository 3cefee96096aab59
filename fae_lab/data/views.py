"""What a run sees of a data set: the train/test split of samples, the roles of the scales,
and per-scale spectral summaries.

NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fae_lab.config import TRAINING_MODES
from fae_lab.data.npz import MultiscaleData
from fae_lab.errors import UsageError
from fae_lab.grid import wavenumber_magnitude


def split_samples(n_samples: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random split of sample indices 0..N-1 into ``(train_idx, test_idx)``.

    n_test = round(test_fraction * N), clipped to 1..N-1 so that both sets are non-empty;
    both are sorted int64, disjoint, and together every index. Same seed, same split.
    """
    if not 0 < test_fraction < 1:
        raise UsageError(f"--test-fraction: expected a number in (0, 1), got {test_fraction}")
    if n_samples < 2:
        raise UsageError(f"the data has {n_samples} sample(s); a train/test split needs at least 2")
    n_test = min(max(round(test_fraction * n_samples), 1), n_samples - 1)
    order = np.random.default_rng(seed).permutation(n_samples)
    return np.sort(order[n_test:]).astype(np.int64), np.sort(order[:n_test]).astype(np.int64)


@dataclass(frozen=True)
class ScaleRoles:
    """Scale indices a run trains on and those it only evaluates ("held-out times")."""

    training: tuple[int, ...]
    held_out: tuple[int, ...]


def default_held_out(n_scales: int) -> tuple[int, ...]:
    """The middle scale, T // 2, when T >= 3 (an interpolation test between trained scales);
    none for T < 3, where holding one out would leave too little to train on."""
    return (n_scales // 2,) if n_scales >= 3 else ()


def resolve_scales(data: MultiscaleData, training_mode: str, single_scale_index: int,
                   held_out_indices: tuple[int, ...] | None = None) -> ScaleRoles:
    """The roles of the T scales of ``data``.

    - ``single_scale``: train on ``single_scale_index`` only; every other scale is held out
      (``held_out_indices`` is not used).
    - ``multi_scale``: held out are ``held_out_indices`` if given (``()`` means none), else the
      file's ``held_out_indices``, else :func:`default_held_out`; every other scale is trained.
    """
    n_scales = data.n_scales
    allowed = f"0..{n_scales - 1} (the data has {n_scales} scale{'s' if n_scales > 1 else ''})"
    if training_mode == "single_scale":
        index = single_scale_index
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                or not 0 <= index < n_scales:
            raise UsageError(f"--single-scale-index: expected an index in {allowed}, got {index}")
        others = tuple(i for i in range(n_scales) if i != index)
        return ScaleRoles(training=(int(index),), held_out=others)
    if training_mode != "multi_scale":
        raise UsageError(f"--training-mode: expected one of {', '.join(TRAINING_MODES)}, "
                         f"got {training_mode!r}")
    if held_out_indices is not None:
        held = tuple(held_out_indices)
        bad = [i for i in held if isinstance(i, bool) or not isinstance(i, (int, np.integer))
               or not 0 <= i < n_scales]
        if bad:
            raise UsageError(f"--held-out-indices: expected indices in {allowed}, got {list(held)}")
        if len(set(held)) != len(held):
            raise UsageError(f"--held-out-indices: expected distinct indices in {allowed}, "
                             f"got {list(held)}")
        if len(held) == n_scales:
            raise UsageError(f"--held-out-indices: holds out every scale in {allowed}; "
                             "leave at least one to train on")
    elif data.held_out_indices is not None:
        held = data.held_out_indices
    else:
        held = default_held_out(n_scales)
    held = tuple(sorted(int(i) for i in held))
    return ScaleRoles(training=tuple(i for i in range(n_scales) if i not in held), held_out=held)


def high_frequency_energy_fraction(fields: np.ndarray, cutoff: float | None = None) -> np.ndarray:
    """Share of the energy at |n| >= cutoff: ``(N, ..., R, R)`` -> ``(...)``, summed over N.

    With u^ = fft2(u) / R^2 (so sum |u^|^2 = mean(u^2), Parseval), the share is
    sum_i sum_{|n| >= cutoff} |u^_i(n)|^2 / sum_i sum_n |u^_i(n)|^2 over the N samples i
    (``fields`` ``(N, T, R, R)`` gives one share per scale, ``(T,)``). Default cutoff R / 4,
    half the Nyquist frequency, as in docs/metrics.md. A zero field gives NaN.
    """
    resolution = fields.shape[-1]
    cutoff = resolution / 4 if cutoff is None else cutoff
    high_modes = wavenumber_magnitude(resolution) >= cutoff
    high, total = 0.0, 0.0
    for lo in range(0, fields.shape[0], 64):
        power = np.abs(np.fft.fft2(np.asarray(fields[lo: lo + 64], dtype=np.float64))) ** 2
        high = high + power[..., high_modes].sum(axis=(0, -1))
        total = total + power.sum(axis=(0, -2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(high / total)
