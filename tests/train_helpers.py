"""Shared helpers of the training tests: tiny data files, run invocation, NumPy re-derivations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

# Small steps, small batches: a run compiles and trains in seconds on a CPU.
TINY = ["--max-steps", "10", "--eval-every", "5", "--log-every", "2", "--batch-size", "4",
        "--steps-per-call", "5", "--n-reconstruction-samples", "8", "--eval-batch-size", "4"]


def write_tiny_data(path: Path, *, n_samples=10, resolution=16, n_scales=3, seed=0) -> Path:
    from fae_lab.data.generate import generate_microstructures
    from fae_lab.data.npz import save_npz

    save_npz(path, generate_microstructures(n_samples=n_samples, resolution=resolution,
                                            n_scales=n_scales, seed=seed))
    return path


def uncached_env() -> dict[str, str]:
    """The environment of a subprocess that must compile for real, not from the session's
    compilation cache (tests/conftest.py): a test that signals or kills a run while XLA
    compiles needs the compilation to take its time."""
    return {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m fae_lab ARGS`` in a fresh process (what a user's shell does)."""
    return subprocess.run([sys.executable, "-m", "fae_lab", *args], capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_refusal(result: subprocess.CompletedProcess, named: str) -> None:
    """The CLI refused: exit status 2, one line on stderr naming ``named``, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def numpy_radial_bins(resolution: int, n_bins: int):
    """docs/metrics.md, written again in NumPy: bin of every mode, equal width over [0, R/sqrt2]."""
    n = np.fft.fftfreq(resolution) * resolution
    ny, nx = np.meshgrid(n, n, indexing="ij")
    mag = np.sqrt(nx**2 + ny**2)
    width = (resolution / np.sqrt(2)) / n_bins
    # A mode on an edge belongs to the upper bin; the tolerance keeps float rounding from deciding.
    return np.minimum(np.floor(mag / width + 1e-9).astype(int), n_bins - 1), mag


def numpy_eval_metrics(truth: np.ndarray, recon: np.ndarray, trained: np.ndarray, n_bins: int,
                       cutoff: float) -> dict[str, np.ndarray]:
    """Re-derive the store's evaluation variables from ``truth``/``recon`` (S, T, R, R)."""
    e = recon.astype(np.float64) - truth.astype(np.float64)
    R = e.shape[-1]
    power = np.abs(np.fft.fft2(e) / R**2) ** 2  # (S, T, R, R)
    target_power = np.abs(np.fft.fft2(truth.astype(np.float64)) / R**2) ** 2
    index, mag = numpy_radial_bins(R, n_bins)
    spec = np.stack([power[..., index == b].sum(-1) for b in range(n_bins)], -1)  # (S, T, n_bins)
    spec_t = np.stack([target_power[..., index == b].sum(-1) for b in range(n_bins)], -1)
    scale_mse = (e**2).mean(axis=(-1, -2)).mean(0)  # (T,)
    low = power[..., mag < cutoff].sum(-1).mean(0)
    high = power[..., mag >= cutoff].sum(-1).mean(0)
    return {
        "eval_scale_mse": scale_mse,
        "eval_mse": scale_mse[trained].mean(),
        "eval_rel_mse": (e[:, trained] ** 2).sum() / (truth[:, trained].astype(np.float64) ** 2).sum(),
        "eval_scale_spectral_mse": spec.mean(0),
        "eval_spectral_mse": spec.mean(0)[trained].mean(0),
        "eval_spectral_target": spec_t.mean(0)[trained].mean(0),
        "eval_low_freq_mse": low[trained].mean(),
        "eval_high_freq_mse": high[trained].mean(),
    }


def assert_fused_run_follows_xla(data: Path, out: Path, model_flags: list[str]) -> None:
    """Train the same TINY run with ``--kernels xla`` and ``--kernels pallas`` (interpreted off
    the GPU): the loss and evaluation curves agree to float32 tolerance, and the store says
    which encoder kernel ran."""
    import xarray as xr

    from fae_lab.train.cli import main as train_main

    common = ["--data-path", str(data), *model_flags, *TINY]
    assert train_main([*common, "--output-dir", str(out / "xla"), "--kernels", "xla"]) == 0
    assert train_main([*common, "--output-dir", str(out / "pallas"), "--kernels", "pallas"]) == 0
    a = xr.open_zarr(out / "xla" / "metrics.zarr").load()
    b = xr.open_zarr(out / "pallas" / "metrics.zarr").load()
    assert a["train_loss"].size >= 5
    for name in ("train_loss", "eval_rel_mse", "eval_spectral_mse"):
        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-4, atol=1e-7, err_msg=name)
    assert read_json(out / "pallas" / "config.json")["versions"]["encoder_kernel"] == "pallas"
