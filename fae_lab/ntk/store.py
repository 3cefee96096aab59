"""``RUN/ntk.zarr``: the NTK's numbers at one or more training steps (docs/run-store.md).

NumPy, xarray and zarr only (never JAX): the dashboards read it with :func:`read_ntk`. The whole
dataset is small (steps x parts x samples x bins), so adding a step rewrites it: the new
dataset is written beside the old one and swapped in by renames, so a reader sees the old
store or the new one, and a failed write leaves the old one in place.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import xarray as xr

from fae_lab.errors import UsageError

NTK_STORE = "ntk.zarr"
PARTS = ("decoder", "encoder", "fae")
QUANTITIES = {
    "rate": ("k", "mean of rho(n) = f_n^H K f_n over the modes of each |n| bin"),
    "eigenvalue": ("eigen", "eigenvalues of K on the grid, descending"),
    "centroid": ("eigen", "power-weighted mean |n| of each eigenvector"),
    "trace": (None, "trace of K = sum_n rho(n)"),
}
PART_NAMES = {"decoder": "Ker_dec (decoder parameters, z fixed)",
              "encoder": "Ker_enc (encoder parameters, through z)",
              "fae": "Ker_FAE = Ker_dec + Ker_enc"}


def variable_name(part: str, quantity: str) -> str:
    """``ntk_<part>_<quantity>``, e.g. ``ntk_decoder_rate``."""
    return f"ntk_{part}_{quantity}"


def spectrum_dataset(step: int, spectrum, samples: np.ndarray, scales: np.ndarray,
                     k_centres: np.ndarray, k_lower: np.ndarray, k_upper: np.ndarray, *,
                     resolution: int, method: str) -> xr.Dataset:
    """One step's dataset from an :class:`fae_lab.ntk.model.NTKSpectrum` (arrays ``(3, S, ...)``
    in the order of :data:`PARTS`)."""
    top = spectrum.eigenvalue.shape[-1]
    arrays = {"rate": spectrum.rate, "eigenvalue": spectrum.eigenvalue,
              "centroid": spectrum.centroid, "trace": spectrum.trace}
    variables = {}
    for i, part in enumerate(PARTS):
        for quantity, (last, text) in QUANTITIES.items():
            dims = ("ntk_step", "sample") + ((last,) if last else ())
            variables[variable_name(part, quantity)] = xr.Variable(
                dims, np.asarray(arrays[quantity][i], np.float64)[None],
                attrs={"long_name": f"{PART_NAMES[part]}: {text}"})
    coords = {
        "ntk_step": ("ntk_step", np.asarray([step], np.int64)),
        "sample": ("sample", np.asarray(samples, np.int64)),
        "sample_scale": ("sample", np.asarray(scales, np.int64)),
        "k": ("k", np.asarray(k_centres, np.float64)),
        "k_lower": ("k", np.asarray(k_lower, np.float64)),
        "k_upper": ("k", np.asarray(k_upper, np.float64)),
        "eigen": ("eigen", np.arange(top, dtype=np.int64)),
    }
    return xr.Dataset(variables, coords=coords,
                      attrs={"resolution": int(resolution), "method": method, "parts": list(PARTS)})


def read_ntk(run_dir: str | os.PathLike) -> xr.Dataset | None:
    """``RUN/ntk.zarr`` loaded into memory, or None when the run has none."""
    path = Path(run_dir) / NTK_STORE
    if not path.is_dir():
        return None
    with xr.open_zarr(path) as dataset:
        return dataset.load()


def _compatible(old: xr.Dataset, new: xr.Dataset) -> str | None:
    """Why ``new`` cannot join ``old`` (None when it can)."""
    for coord in ("sample", "sample_scale", "eigen", "k"):
        if coord not in old.coords:
            return f"it lacks the coordinate {coord}, unlike"
        if old[coord].shape != new[coord].shape or not np.array_equal(old[coord].values, new[coord].values):
            what = {"sample": "samples (--samples)", "sample_scale": "scales (--scale)",
                    "eigen": "eigenvalues (--top)", "k": "|n| bins"}[coord]
            return f"it holds other {what}"
    return None


def check_joins(run_dir: str | os.PathLike, samples: np.ndarray, scales: np.ndarray, top: int,
                k_centres: np.ndarray) -> None:
    """Refuse (:class:`UsageError`) before any work a computation whose result
    :func:`write_ntk` would refuse: other samples, scales, eigenvalue count or bins than the
    steps already in ``RUN/ntk.zarr``."""
    old = read_ntk(run_dir)
    if old is None:
        return
    S, B = len(samples), len(k_centres)
    blank = SimpleNamespace(rate=np.zeros((3, S, B)), eigenvalue=np.zeros((3, S, top)),
                            centroid=np.zeros((3, S, top)), trace=np.zeros((3, S)))
    probe = spectrum_dataset(0, blank, samples, scales, k_centres, k_centres, k_centres, resolution=0, method="")
    why = _compatible(old, probe)
    if why is not None:
        raise UsageError(f"{Path(run_dir) / NTK_STORE}: {why} than this computation; move it away to start a new one")


def write_ntk(run_dir: str | os.PathLike, step_dataset: xr.Dataset) -> Path:
    """Add (or replace) one step in ``RUN/ntk.zarr``; returns its path. Refuses, with a
    :class:`UsageError`, a step whose samples, scales, eigenvalue count or bins differ from the
    steps already stored (they would not line up), leaving the store as it was."""
    run_dir = Path(run_dir)
    path = run_dir / NTK_STORE
    old = read_ntk(run_dir)
    dataset = step_dataset
    if old is not None:
        why = _compatible(old, step_dataset)
        if why is not None:
            raise UsageError(f"{path}: {why} than this computation; move it away to start a new one")
        step = int(step_dataset["ntk_step"].values[0])
        kept = old.sel(ntk_step=old["ntk_step"].values != step)
        dataset = xr.concat([kept, step_dataset], "ntk_step", data_vars="all", coords="minimal",
                            compat="override", join="override").sortby("ntk_step")
        dataset.attrs = step_dataset.attrs
    temporary = run_dir / f".{NTK_STORE}.new-{os.getpid()}"
    previous = run_dir / f".{NTK_STORE}.old-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    with warnings.catch_warnings():  # zarr: consolidated metadata is not in the v3 spec yet
        warnings.simplefilter("ignore")
        dataset.to_zarr(temporary, mode="w", consolidated=True)
    if path.exists():
        os.replace(path, previous)
    os.replace(temporary, path)
    shutil.rmtree(previous, ignore_errors=True)
    return path
