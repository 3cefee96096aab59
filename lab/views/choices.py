"""Choice lists the single-run and two-run views share: scales, test samples, the evaluation shown."""

from __future__ import annotations

from fae_lab.store import RunReader
from lab.transforms import ALL_TRAINING_SCALES


def scale_options(reader: RunReader | None, with_mean: bool = True) -> dict[str, int]:
    """Labels of the scale choices -> scale index: (with ``with_mean``) the training-scale
    average first, then each scale with its t and whether it is held out."""
    options = {"training scales (mean)": ALL_TRAINING_SCALES} if with_mean else {}
    if reader is None or not reader.ready:
        return options or {"scale 0": 0}
    for scale, time, held_out in zip(reader.scales, reader.times, reader.held_out, strict=True):
        options[f"scale {int(scale)}, t = {time:.3g}" + (" (held-out)" if held_out else "")] = int(scale)
    return options


def sample_options(reader: RunReader | None) -> dict[str, int]:
    """Labels of the stored test samples, by position."""
    if reader is None or not reader.ready:
        return {"sample 0": 0}
    return {f"test sample {i}": i for i in range(reader.truth().shape[0])}


def evaluation_index(n_eval: int, index: int, follow: bool) -> int:
    """The evaluation to show among ``n_eval``: the newest when following, else ``index``
    clamped to those written."""
    if n_eval <= 0:
        return 0
    return n_eval - 1 if follow else min(max(index, 0), n_eval - 1)
