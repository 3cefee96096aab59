"""The bytes a training run (or a vmapped group of them) needs, from its settings alone.

:func:`run_needs` is pure: a :class:`RunConfig`, the data's ``N, T, R`` and the group size
in, a list of :class:`fae_lab.budget.Need` out. :func:`check_run_budget` measures the
machine and refuses, in one line naming the flag, a run that cannot fit, before the data
is generated or loaded and before the stores are preallocated. JAX-free (device memory is
read only where JAX is already imported).

Sizes, with ``n_train = ceil(max_steps / log_every)`` log rows, ``n_eval = floor(max_steps /
eval_every) + 1`` evaluations (+1 each for the last step), S reconstruction samples, K
radial bins, B batch, P points per sample and widths w_l:

* host: the step schedules, ``(n_train + n_eval)`` int64 a few times over (layout, row
  aggregator, writer), and the data while it is generated or loaded;
* device: train and test fields ``N T R^2`` float32, and per member the larger of the
  activations of a step ``B P sum(w_l)`` float32 (times
  :data:`fae_lab.budget.ACTIVATION_COPIES` for the backward pass) and of an evaluation
  batch, about ``2 B_eval T R^2 max(w_l)``;
* disk, per member: ``metrics.zarr`` rows (every variable of the layout's table, float64)
  and ``reconstructions.zarr``, ``(n_eval + 1) S T R^2`` float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fae_lab.budget import (
    ACTIVATION_COPIES,
    DEVICE,
    DISK,
    FLOAT32,
    FLOAT64,
    HOST,
    INT64,
    Need,
    generation_needs,
    larger_departure,
    loaded_data_needs,
    refuse_if_over,
)
from fae_lab.config import LOSS_TERM_NAMES, RunConfig
from fae_lab.store.layout import EVAL_VARIABLES, TRAIN_VARIABLES

# Copies of the step schedules held on the host (layout, aggregator, writer, coordinates).
SCHEDULE_COPIES = 4
# The defaults a need's factors are compared with to name the flag that made it large.
_DEFAULT_EVALS, _DEFAULT_BATCH, _DEFAULT_POINTS = 101, 32, 64 * 64


def schedule_rows(config: RunConfig) -> tuple[int, int]:
    """``(n_train, n_eval)``: rows of the store's ``step`` and ``eval_step`` dimensions."""
    m, e = config.max_steps, config.eval
    return math.ceil(m / e.log_every), m // e.eval_every + (1 if m % e.eval_every else 0) + 1


def eval_row_values(n_scales: int, n_bins: int) -> int:
    """Values in one evaluation row of ``metrics.zarr``: each variable's non-step dims."""
    size = {"scale": n_scales, "k": n_bins}
    return sum(math.prod(size[d] for d in v.dims[1:]) for v in EVAL_VARIABLES.values())


def data_flag(config: RunConfig, which: str = "resolution") -> str:
    """The flag (with its value) that sets the data's size."""
    d = config.data
    if d.data_path is not None:
        return f"--data-path {d.data_path}"
    if which == "n_samples":
        return f"--generate-n-samples {d.generate_n_samples}"
    return f"--generate-resolution {d.generate_resolution}"


def run_needs(config: RunConfig, n_samples: int, n_scales: int, resolution: int,
              n_members: int = 1) -> list[Need]:
    """What a group of ``n_members`` runs like ``config`` needs, on data ``(N, T, R, R)``."""
    N, T, R = n_samples, n_scales, resolution
    e = config.eval
    n_train, n_eval = schedule_rows(config)
    steps_flag = (f"--max-steps {config.max_steps}" if e.eval_every >= 500 and e.log_every >= 50
                  else f"--max-steps {config.max_steps} (with --eval-every {e.eval_every}, "
                       f"--log-every {e.log_every})")
    needs = [Need(HOST, SCHEDULE_COPIES * INT64 * (n_train + n_eval), "the step schedules", steps_flag)]

    needs.append(Need(DEVICE, FLOAT32 * N * T * R * R, "the fields on the device", data_flag(config)))
    needs.append(activation_need(config, T, R, n_members))

    S = min(e.n_reconstruction_samples, N)
    train_values = len(TRAIN_VARIABLES) + len(LOSS_TERM_NAMES[config.loss.loss_type]) + 1
    metrics = FLOAT64 * (n_train * train_values + n_eval * eval_row_values(T, e.spectral_n_bins))
    recon = FLOAT32 * (n_eval + 1) * S * T * R * R
    store_flag = larger_departure(
        {"steps": (n_eval, _DEFAULT_EVALS), "image": (S * T * R * R, 4 * 6 * _DEFAULT_POINTS)},
        {"steps": steps_flag, "image": data_flag(config)})
    what = "the run store" if n_members == 1 else f"the {n_members} run stores"
    needs.append(Need(DISK, n_members * (metrics + recon), what, store_flag))
    return needs


def layer_widths(config: RunConfig) -> list[int]:
    """Widths of the per-point layers: coordinate features, encoder and decoder MLPs, and
    the random Fourier features of an RFF-output decoder."""
    m = config.model
    widths = [2 * m.n_coordinate_frequencies, *m.encoder_hidden, *m.decoder_hidden]
    if m.decoder_type == "rff_output":
        widths.append(m.rff_dim * max(1, len(m.rff_multiscale_sigmas or ())))
    return widths


def activation_need(config: RunConfig, n_scales: int, resolution: int, n_members: int = 1) -> Need:
    """Device bytes of the larger of one training step's and one evaluation batch's
    activations (they are not live at once), for the whole group.

    A step keeps every layer's ``B P w_l`` floats for the backward pass (times
    :data:`ACTIVATION_COPIES`); an evaluation, forward only, holds about two layers of
    ``B_eval T R^2 max(w_l)``. A lower estimate on purpose: what it refuses cannot fit.
    """
    widths, RR = layer_widths(config), resolution * resolution
    points = max(config.data.encoder_points or RR, config.data.decoder_points or RR)
    batch, eval_batch = config.optim.batch_size, config.eval.eval_batch_size
    per_step = FLOAT32 * ACTIVATION_COPIES * batch * points * sum(widths) * n_members
    per_eval = FLOAT32 * 2 * eval_batch * n_scales * RR * max(widths) * n_members
    if per_step >= per_eval:
        return Need(DEVICE, per_step, "one training step's activations", larger_departure(
            {"batch": (batch, _DEFAULT_BATCH), "points": (points, _DEFAULT_POINTS)},
            {"batch": f"--batch-size {batch}", "points": data_flag(config)}))
    return Need(DEVICE, per_eval, "one evaluation batch's activations", larger_departure(
        {"batch": (eval_batch, 64), "points": (RR, _DEFAULT_POINTS)},
        {"batch": f"--eval-batch-size {eval_batch}", "points": data_flag(config)}))


def data_shape(config: RunConfig) -> tuple[int, int, int, list[Need]] | None:
    """``(N, T, R, needs of making the data)`` from the flags or the data file's headers;
    None where the headers say no shape (loading the file will refuse it, naming why)."""
    d = config.data
    if d.data_path is None:
        flags = {"resolution": data_flag(config), "n_samples": data_flag(config, "n_samples")}
        return (d.generate_n_samples, d.generate_n_scales, d.generate_resolution,
                generation_needs(d.generate_n_samples, d.generate_n_scales, d.generate_resolution, flags))
    from fae_lab.data.npz import check_file

    headers = check_file(d.data_path)  # refuses a file that is not one, naming why
    fields = headers.get("fields")
    if fields is None or len(fields.shape) not in (3, 4):
        return None
    shape = fields.shape
    N, T, R = shape[0], (shape[1] if len(shape) == 4 else 1), shape[-1]
    stored = sum(h.nbytes for h in headers.values())
    return N, T, R, loaded_data_needs(stored, math.prod(shape), f"--data-path {d.data_path}")


def check_run_budget(configs: Sequence[RunConfig]) -> None:
    """Refuse (one line) a group of runs that cannot fit in memory or on disk."""
    first = configs[0]
    shape = data_shape(first)
    if shape is None:
        return
    N, T, R, needs = shape
    needs = needs + run_needs(first, N, T, R, len(configs))
    if first.resume:  # the stores exist already and grow only by the rows left
        needs = [n for n in needs if n.resource != DISK]
    refuse_if_over(needs, disk_at=first.output_dir)
