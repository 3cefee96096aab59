"""Fixtures of the dashboard tests: run stores written by the real store writer, and the
browser (Debian's chromium through pytest-playwright; no browser download)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import xarray as xr

from fae_lab.testing.fake_runs import SyntheticRunWriter, write_synthetic_run
from tests.train_helpers import read_json

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "lab"

# (folder, loss_type, decoder_type, status): two losses x two decoders, and a run half way.
RUNS = (
    ("baseline", "l2", "standard", "finished"),
    ("h1", "h1", "standard", "finished"),
    ("rff", "l2", "rff_output", "finished"),
    ("group/combined-rff", "combined", "rff_output", "running"),
)


def tags_on_disk(run_dir: Path) -> dict[str, str]:
    """A run's tags read straight from its config.json (independent of the store reader)."""
    tags = json.loads((run_dir / "config.json").read_text())["tags"]
    return dict(zip(("training_mode", "loss_type", "decoder_type", "pooling_type"), tags,
                    strict=True))


def on_disk(run_dir: Path, name: str, store: str = "metrics.zarr"):
    """Valid rows of ``name`` (those progress.json counts) read with plain xarray
    (independent of the store reader)."""
    progress = read_json(run_dir / "progress.json")
    with xr.open_zarr(run_dir / store) as ds:
        variable = ds[name]
        if "eval_step" in variable.dims:
            variable = variable.isel(eval_step=slice(0, progress["n_eval"]))
        if "step" in variable.dims:
            variable = variable.isel(step=slice(0, progress["n_train"]))
        return variable.values


def live_run(root: Path, name: str = "live", **kwargs) -> SyntheticRunWriter:
    """A small synthetic run under ``root / name`` that a test advances evaluation by evaluation."""
    options = dict(n_evals=10, eval_every=20, log_every=5, resolution=16, n_scales=3,
                   n_bins=8, loss_type="fourier_weighted", decoder_type="rff_output", seed=7)
    options.update(kwargs)
    return SyntheticRunWriter(root / name, **options)


def write_runs(root: Path, n_evals: int = 8) -> Path:
    for i, (name, loss, decoder, status) in enumerate(RUNS):
        write_synthetic_run(root / name, loss_type=loss, decoder_type=decoder, status=status,
                            n_evals=n_evals, eval_every=20, log_every=5, resolution=16,
                            n_scales=3, n_samples=2, n_bins=8, seed=i)
    return root


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    """Four runs, written once per test process (read-only for the tests that use it; a test
    that changes runs takes ``fresh_runs``): l2 / h1 / l2 with the RFF-output
    decoder, finished, and a combined-loss RFF run stopped half way (status running)."""
    return write_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def fresh_runs(runs_dir, tmp_path) -> Path:
    """A copy of the four runs, in a folder the test may change."""
    return Path(shutil.copytree(runs_dir, tmp_path / "runs"))


@pytest.fixture(scope="session")
def browser_type_launch_args():
    """pytest-playwright's browser: Debian's chromium, offline, in a container."""
    return {
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"],
    }


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the browser tests keep their screenshots (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
