"""Preallocate a run's zarr stores (docs/run-store.md) and read their layout back.

Every array is created with its final shape, filled with NaN (zarr writes no chunk that
holds only the fill value) and described for xarray: ``dimension_names``, a ``coordinates``
attribute naming the non-dimension coordinates (``time``, ``sigma``, ``held_out`` on
``scale``; ``k_lower``, ``k_upper`` on ``k``), ``long_name`` and ``seed_key``. The
consolidated metadata is written once, at the end, and stays true: nothing about the
stores' structure changes afterwards.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import fae_lab
from fae_lab.grid import grid_coordinates
from fae_lab.store.layout import (
    EVAL_CHUNK_ROWS,
    METRICS_STORE,
    RECONSTRUCTION_VARIABLES,
    RECONSTRUCTIONS_STORE,
    TRAIN_CHUNK_ROWS,
    StoreLayout,
    Variable,
    chunk_rows,
)


def _coordinates_attr(dims: Sequence[str]) -> str | None:
    names = []
    if "scale" in dims:
        names += ["time", "sigma", "held_out"]
    if "k" in dims:
        names += ["k_lower", "k_upper"]
    return " ".join(names) or None


def _create_variable(group: zarr.Group, name: str, variable: Variable, shape: tuple[int, ...],
                     dtype: str, chunks: tuple[int, ...], shards: tuple[int, ...] | None) -> None:
    attributes: dict[str, Any] = {"long_name": variable.long_name}
    if variable.seed_key is not None:
        attributes["seed_key"] = variable.seed_key
    coordinates = _coordinates_attr(variable.dims)
    if coordinates:
        attributes["coordinates"] = coordinates
    group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                       fill_value=np.nan, dimension_names=list(variable.dims),
                       attributes=attributes)


def _create_coordinate(group: zarr.Group, name: str, dim: str, values: np.ndarray,
                       long_name: str) -> None:
    values = np.asarray(values)
    array = group.create_array(name, shape=values.shape, dtype=values.dtype,
                               chunks=(max(values.size, 1),), dimension_names=[dim],
                               attributes={"long_name": long_name})
    array[...] = values


def _scale_coordinates(group: zarr.Group, layout: StoreLayout) -> None:
    _create_coordinate(group, "scale", "scale", layout.scales, "scale index into fields[:, scale]")
    _create_coordinate(group, "time", "scale", layout.times, "scale parameter t")
    _create_coordinate(group, "sigma", "scale", layout.sigmas,
                       "Gaussian filter width, domain units (NaN: not given)")
    _create_coordinate(group, "held_out", "scale", layout.held_out, "never trained on")
    _create_coordinate(group, "eval_step", "eval_step", layout.eval_steps,
                       "training step of each evaluation")


def _consolidate(path: Path) -> None:
    # zarr warns that consolidated metadata is not in the v3 spec yet; xarray.open_zarr
    # still reads it, and without it plain open_zarr warns and opens ~30 files instead of one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))


def _dataset_attrs(layout: StoreLayout) -> dict[str, Any]:
    return {"run_name": layout.run_name, "tags": list(layout.tags),
            "resolution": layout.resolution, "spectral_cutoff": layout.spectral_cutoff,
            "spectral_n_bins": layout.n_bins, "loss_terms": list(layout.loss_terms),
            "fae_lab_version": fae_lab.__version__}


def create_metrics_store(path: Path, layout: StoreLayout) -> None:
    """``metrics.zarr``: coordinates, every variable of ``layout.metric_variables()`` NaN."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=_dataset_attrs(layout))
    _create_coordinate(group, "step", "step", layout.train_steps,
                       "training step of each training-log row")
    _scale_coordinates(group, layout)
    _create_coordinate(group, "k", "k", layout.k_centres,
                       "radial wavenumber bin centre, cycles per unit length")
    _create_coordinate(group, "k_lower", "k", layout.k_lower, "lower bin edge")
    _create_coordinate(group, "k_upper", "k", layout.k_upper, "upper bin edge")
    for name, variable in layout.metric_variables().items():
        shape = layout.shape_of(variable)
        rows = chunk_rows(shape[0], math.prod(shape[1:]),
                          TRAIN_CHUNK_ROWS if variable.dims[0] == "step" else EVAL_CHUNK_ROWS)
        chunks = (rows, *shape[1:])
        _create_variable(group, name, variable, shape, "float64", chunks, None)
    _consolidate(path)


def create_reconstructions_store(path: Path, layout: StoreLayout, truth: np.ndarray) -> None:
    """``reconstructions.zarr``: coordinates, ``truth (S, T, R, R)`` written, ``recon`` NaN."""
    R = layout.resolution
    attrs = {k: v for k, v in _dataset_attrs(layout).items() if k != "loss_terms"}
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=attrs)
    _create_coordinate(group, "sample", "sample", layout.recon_samples,
                       "index of the test sample in the data file")
    _scale_coordinates(group, layout)
    axis = grid_coordinates(R)[:R, 0].astype(np.float64)
    _create_coordinate(group, "y", "y", axis, "grid position y = iy / R")
    _create_coordinate(group, "x", "x", axis, "grid position x = ix / R")
    S, T = layout.n_samples, layout.n_scales
    # One chunk per image, so a viewer reads one field; one shard file per evaluation.
    _create_variable(group, "truth", RECONSTRUCTION_VARIABLES["truth"], (S, T, R, R),
                     "float32", (1, 1, R, R), (S, T, R, R))
    group["truth"][...] = truth
    _create_variable(group, "recon", RECONSTRUCTION_VARIABLES["recon"],
                     (layout.n_eval, S, T, R, R), "float32", (1, 1, 1, R, R), (1, S, T, R, R))
    _consolidate(path)


def read_layout(run_dir: Path) -> StoreLayout:
    """The :class:`StoreLayout` a run's stores were created from."""
    metrics = zarr.open_group(str(run_dir / METRICS_STORE), mode="r")
    recon = zarr.open_group(str(run_dir / RECONSTRUCTIONS_STORE), mode="r")
    attrs = metrics.attrs.asdict()
    return StoreLayout(
        train_steps=metrics["step"][...], eval_steps=metrics["eval_step"][...],
        loss_terms=tuple(attrs["loss_terms"]), scales=metrics["scale"][...],
        times=metrics["time"][...], sigmas=metrics["sigma"][...],
        held_out=metrics["held_out"][...], k_centres=metrics["k"][...],
        k_lower=metrics["k_lower"][...], k_upper=metrics["k_upper"][...],
        spectral_cutoff=attrs["spectral_cutoff"], resolution=attrs["resolution"],
        recon_samples=recon["sample"][...], run_name=attrs["run_name"],
        tags=tuple(attrs["tags"]))
