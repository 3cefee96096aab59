"""Choice lists the single-run and two-run views share: scales, test samples, the evaluation shown;
and what the image views say of a run kept without its reconstructions."""

from __future__ import annotations

from fae_lab.store import RunReader
from lab.text import markdown_text
from lab.transforms import ALL_TRAINING_SCALES, high_band_power, informative_samples, usable_cutoff


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
    """Labels of the stored test samples -> their index, most informative first
    (:func:`lab.transforms.informative_samples`: most high-band power |n| >= cutoff in the
    truth over all scales), so the first, the default, is never a blank field while another
    exists. Each label gives that power."""
    if reader is None or not reader.ready or not reader.has_reconstructions:
        return {"sample 0": 0}
    truth = reader.truth()
    cutoff = reader.spectral_cutoff
    order = informative_samples(truth, cutoff)
    power = high_band_power(truth, usable_cutoff(cutoff, truth.shape[-1]))
    return {f"test sample {i} (high-band power {power[i]:.2e})": int(i) for i in order}


def no_reconstructions(name: str) -> str:
    """The image views' line for a run whose store was kept without ``reconstructions.zarr``."""
    return (f"{markdown_text(name)} was kept without its reconstructions (no reconstructions.zarr): "
            "no fields to show; its curves and spectra are in the other tabs.")


def evaluation_index(n_eval: int, index: int, follow: bool) -> int:
    """The evaluation to show among ``n_eval``: the newest when following, else ``index``
    clamped to those written."""
    if n_eval <= 0:
        return 0
    return n_eval - 1 if follow else min(max(index, 0), n_eval - 1)


def set_sample_choices(view, reader: RunReader | None) -> None:
    """Give ``view.param.sample`` the choices of ``reader``'s samples; when they changed
    (another run's samples), select the most informative one (the first), else keep the pick."""
    options = sample_options(reader)
    if options != view.param.sample.objects:
        view.param.sample.objects = options
        view.sample = next(iter(options.values()))
    elif view.sample not in options.values():
        view.sample = next(iter(options.values()))
