"""The bottleneck ladder's comparison: how far up in |k| each rung learned its training fields.

With E_b the error power and T_b the target power in radial bin b (the run store's
``eval_train_spectral_mse`` / ``eval_train_spectral_target``, or ``final.json``'s
``final/train/spectral/mse_by_k`` / ``target_by_k``), the *learned fraction* of bin b is

    f_b = 1 - E_b / T_b            (1: the bin is reproduced; 0: nothing of it is; NaN: T_b = 0)

and the *resolved bandwidth* at threshold θ is the centre k of the last bin of the run of bins
from the lowest |k| up with f_b >= θ (0 when the lowest bin already fails; bins without
target power are skipped). Rungs are compared on the training split: the rungs without an
encoder have no test numbers, and the FAE's training split makes the comparison like for like.
NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Bottom to top: a rung resolving far more than the next one names the bottleneck.
RUNG_ORDER = ("decoder_alone", "auto_decoder", "fae")
LADDER_COLUMNS = ("rung", "run", "status", "step", "train_rel_mse", "test_rel_mse",
                  "train_resolved_k_50", "train_resolved_k_90")


def learned_fraction(error_power: Sequence[float], target_power: Sequence[float]) -> np.ndarray:
    """``1 - E_b / T_b`` per bin, ``(n_bins,)``; NaN where ``T_b`` is 0 or either is missing."""
    e = np.asarray(error_power, np.float64)
    t = np.asarray(target_power, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, 1.0 - e / t, np.nan)


def resolved_bandwidth(k: Sequence[float], fraction: Sequence[float], threshold: float) -> float:
    """Centre of the last bin of the low-|k| run with ``fraction >= threshold`` (NaN bins
    skipped); 0.0 when the first bin with target power fails; NaN when no bin has any."""
    k, fraction = np.asarray(k, np.float64), np.asarray(fraction, np.float64)
    resolved, seen = 0.0, False
    for centre, f in zip(k, fraction, strict=True):
        if not math.isfinite(f):
            continue
        seen = True
        if f < threshold:
            break
        resolved = float(centre)
    return resolved if seen else math.nan


def train_resolved(final: dict | None, threshold: float) -> float | None:
    """:func:`resolved_bandwidth` of a run's training split from its ``final.json`` (None when
    the run has no training-split numbers: not finished, or written before they existed)."""
    final = final or {}
    err, target = final.get("final/train/spectral/mse_by_k"), final.get("final/train/spectral/target_by_k")
    k = final.get("final/spectral/k")
    if err is None or target is None or k is None:
        return None
    as_float = [math.nan if v is None else v for v in err]
    value = resolved_bandwidth(k, learned_fraction(as_float, [math.nan if v is None else v for v in target]),
                               threshold)
    return None if math.isnan(value) else value


def ladder_rows(rows: Sequence[dict]) -> list[dict]:
    """The phase table's rows of the ladder (every rung's runs), bottom rung first."""
    ladder = [r for r in rows if r.get("rung") in RUNG_ORDER]
    return sorted(ladder, key=lambda r: (RUNG_ORDER.index(r["rung"]), r["run"]))
