"""``fae-lab ntk RUN``'s work, and the training loop's ``--track-ntk-every``: restore a trained
FAE, compute its NTK spectrum on test fields, write ``RUN/ntk.zarr``.

The fields are the first ``samples`` test samples of the run's split (config.json
``split.test``), each at one scale (default: the sharpest training scale), encoded alone on the
full R x R grid. The |n| bins are the run store's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from fae_lab.config import RunConfig, from_json_dict
from fae_lab.errors import UsageError
from fae_lab.grid import radial_bin_edges
from fae_lab.models import build_model
from fae_lab.ntk.model import FAEKernels
from fae_lab.ntk.store import check_joins, spectrum_dataset, write_ntk
from fae_lab.train.checkpoint import restore_step
from fae_lab.train.step import TrainState, adam


@dataclasses.dataclass(frozen=True)
class NTKRequest:
    """What to compute: ``samples`` test samples at ``scale`` (None: the sharpest training
    scale), ``top`` eigenvalues, by ``method`` (:data:`fae_lab.ntk.model.METHODS`); matrix-free
    shell rates over at most ``modes_per_shell`` modes per bin (None: all)."""

    samples: int = 2
    top: int = 16
    scale: int | None = None
    method: str = "auto"
    modes_per_shell: int | None = None


def run_payload(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"{run_dir}: no readable config.json ({type(err).__name__}); is it a run directory?") from None


def test_fields(config: RunConfig, payload: dict, request: NTKRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fields (S, R, R), samples (S,), scales (S,))`` of the request, from the run's data."""
    from fae_lab.train.run import load_data

    if payload.get("rung", "fae") != "fae":
        raise UsageError(f"the NTK's encoder part needs an FAE run; this run is the ladder rung {payload['rung']!r}")
    data = load_data(config)
    test = np.asarray(payload.get("split", {}).get("test", []), np.int64)
    if request.samples > len(test):
        raise UsageError(f"--samples: the run's test split has {len(test)} samples, got {request.samples}")
    scale = request.scale
    if scale is None:
        scale = int(payload.get("roles", {}).get("training_scales", [0])[0])
    if not 0 <= scale < data.n_scales:
        raise UsageError(f"--scale: the data have scales 0..{data.n_scales - 1}, got {scale}")
    samples = test[: request.samples]
    return (np.asarray(data.fields[samples, scale], np.float32), samples,
            np.full(len(samples), scale, np.int64))


def float32_model(config: RunConfig, resolution: int):
    """The run's architecture in float32 with XLA's encoder (the parameters a checkpoint of
    any precision and kernel choice restores into)."""
    return build_model(config.model, resolution, seed=config.seed)


def restore_parameters(run_dir: Path, model, step: int | None) -> int:
    """Load the checkpoint at ``step`` (None: the latest) into ``model``; returns its step.
    Looks in ``checkpoints/latest`` and ``checkpoints/best``."""
    root = run_dir / "checkpoints"
    managers = [ocp.CheckpointManager(root / name, options=ocp.CheckpointManagerOptions(create=False))
                for name in ("latest", "best") if (root / name).is_dir()]
    try:
        steps = {s: manager for manager in reversed(managers) for s in manager.all_steps()}
        if not steps:
            raise UsageError(f"{run_dir}: no checkpoint to compute the NTK of")
        chosen = max(steps) if step is None else step
        if chosen not in steps:
            raise UsageError(f"--step: the run has checkpoints at steps {sorted(steps)}, not at {step}")
        _, params, rest = nnx.split(model, nnx.Param, ...)
        abstract = TrainState(params=params, opt_state=adam().init(params), step=jnp.zeros((), jnp.int32),
                              diverged_step=jnp.zeros((), jnp.int32))
        state, _, fixed = restore_step(steps[chosen], chosen, abstract, rest.to_pure_dict(), record=False)
        nnx.update(model, state.params)
        # The features the run trained with (a checkpoint from before they were kept: redrawn).
        if fixed is not None:
            nnx.replace_by_pure_dict(rest, fixed)
            nnx.update(model, rest)
        return int(chosen)
    finally:
        for manager in managers:
            manager.close()


def store_bins(run_dir: Path, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run store's |n| bins ``(centres, lower, upper)`` (metrics.zarr's ``k`` coordinates)."""
    import xarray as xr

    try:
        with xr.open_zarr(run_dir / "metrics.zarr") as metrics:
            n_bins = int(metrics.sizes["k"])
    except Exception as err:  # any unreadable store is one line
        raise UsageError(f"{run_dir}: metrics.zarr is not readable ({type(err).__name__})") from None
    return radial_bin_edges(resolution, n_bins)


def compute_and_store(run_dir: Path, kernels: FAEKernels, model, step: int, fields: np.ndarray,
                      samples: np.ndarray, scales: np.ndarray, top: int) -> Path:
    """The NTK spectrum of ``model`` on ``fields``, stored as step ``step`` of ``RUN/ntk.zarr``."""
    R = fields.shape[-1]
    centres, lower, upper = store_bins(run_dir, R)
    spectrum = kernels.spectrum(model, fields, len(centres), top)
    dataset = spectrum_dataset(step, spectrum, samples, scales, centres, lower, upper,
                               resolution=R, method=kernels.method)
    dataset.attrs["modes_per_shell"] = int(kernels.modes_per_shell or 0)  # 0: every mode
    return write_ntk(run_dir, dataset)


def ntk_of_run(run_dir: str | Path, request: NTKRequest, step: int | None = None) -> tuple[Path, int]:
    """``fae-lab ntk``: restore the run's checkpoint (latest or ``step``), compute, store.
    Returns the store's path and the step computed."""
    run_dir = Path(run_dir)
    payload = run_payload(run_dir)
    config = from_json_dict(payload["config"])
    fields, samples, scales = test_fields(config, payload, request)
    R = fields.shape[-1]
    if not 0 < request.top < R * R:
        raise UsageError(f"--top: expected 1..{R * R - 1} eigenvalues on a {R}x{R} grid, got {request.top}")
    centres, _, _ = store_bins(run_dir, R)  # refuse an unreadable store before the minutes of work
    check_joins(run_dir, samples, scales, request.top, centres)
    model = float32_model(config, R)
    chosen = restore_parameters(run_dir, model, step)
    kernels = FAEKernels(model, R, request.method, request.modes_per_shell)
    return compute_and_store(run_dir, kernels, model, chosen, fields, samples, scales, request.top), chosen


TRACK_REQUEST = NTKRequest(samples=2, top=16)


class NTKTracker:
    """``--track-ntk-every N`` of ``fae-lab train``: at the evaluations whose step is a multiple
    of N (step 0 included), each running member's NTK spectrum into its ``ntk.zarr``, with
    :data:`TRACK_REQUEST`'s samples and eigenvalue count (at most R² − 1). Each member's
    programs are compiled once (members may differ in their fixed Fourier matrices)."""

    def __init__(self, every: int, configs: list[RunConfig], data_fields: np.ndarray,
                 test_idx: np.ndarray, training_scales: np.ndarray):
        self.every = every
        R = data_fields.shape[-1]
        self.top = min(TRACK_REQUEST.top, R * R - 1)
        n = min(TRACK_REQUEST.samples, len(test_idx))
        scale = int(training_scales[0])
        self.samples = np.asarray(test_idx[:n], np.int64)
        self.scales = np.full(n, scale, np.int64)
        self.fields = np.asarray(data_fields[self.samples, scale], np.float32)
        self.models = [float32_model(cfg, R) for cfg in configs]
        self.kernels = [FAEKernels(model, R, TRACK_REQUEST.method) for model in self.models]

    def __call__(self, members, params_of, step: int) -> None:
        """``members``: ``(index, member)`` pairs of the running members; ``params_of(i)``: member
        i's trained parameters (an ``nnx.State``)."""
        if step % self.every:
            return
        for i, member in members:
            nnx.update(self.models[i], params_of(i))
            compute_and_store(member.run_dir, self.kernels[i], self.models[i], step, self.fields,
                              self.samples, self.scales, self.top)
