"""Each of the seed's eight experiment commands runs verbatim (program name and data path
aside, a tiny run appended) and leaves a run store that keeps docs/run-store.md's contracts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from fae_lab.experiments import SEED_COMMANDS
from fae_lab.train.cli import main as train_main
from tests.train_helpers import TINY, numpy_eval_metrics, read_json, write_tiny_data

STORE_VARIABLES = {
    "train_loss": ("step",),
    "grad_norm": ("step",),
    "learning_rate": ("step",),
    "wall_time": ("step",),
    "eval_mse": ("eval_step",),
    "eval_rel_mse": ("eval_step",),
    "eval_scale_mse": ("eval_step", "scale"),
    "eval_spectral_mse": ("eval_step", "k"),
    "eval_scale_spectral_mse": ("eval_step", "scale", "k"),
    "eval_spectral_target": ("eval_step", "k"),
    "eval_low_freq_mse": ("eval_step",),
    "eval_high_freq_mse": ("eval_step",),
    "eval_high_freq_error_ratio": ("eval_step",),
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEED_COMMANDS))
def test_seed_command_runs_and_keeps_the_store_contract(name, tiny_data, tmp_path):
    out = tmp_path / name
    argv = ["--data-path", str(tiny_data), "--output-dir", str(out), *SEED_COMMANDS[name],
            "--wandb-name", name, *TINY]
    assert train_main(argv) == 0

    config = read_json(out / "config.json")
    flags = SEED_COMMANDS[name]

    def flag(option, default):
        return flags[flags.index(option) + 1] if option in flags else default

    assert config["tags"] == [flag("--training-mode", "multi_scale"), flag("--loss-type", "l2"),
                              flag("--decoder-type", "standard"), flag("--pooling-type", "attention")]
    progress = read_json(out / "progress.json")
    assert progress["status"] == "finished" and progress["step"] == 10
    assert progress["n_train"] == 5 and progress["n_eval"] == 3  # rows at 2..10; evals at 0, 5, 10

    metrics = xr.open_zarr(out / "metrics.zarr")
    for var, dims in STORE_VARIABLES.items():
        assert metrics[var].dims == dims, var
        assert "long_name" in metrics[var].attrs, var
    assert metrics["eval_high_freq_error_ratio"].attrs["seed_key"] == "eval/spectral/high_freq_error_ratio"
    assert metrics["held_out"].dtype == bool and metrics["time"].dims == ("scale",)
    n_bins = int(flag("--spectral-n-bins", 16))
    assert metrics.sizes["k"] == n_bins
    terms = [v for v in metrics.data_vars if v.startswith("train_loss_")]
    assert terms, "each loss term is logged"
    np.testing.assert_allclose(sum(metrics[t].values for t in terms), metrics["train_loss"].values, rtol=1e-5)

    # docs/metrics.md identities on the stored numbers ...
    ev = metrics.isel(eval_step=slice(0, progress["n_eval"])).load()
    np.testing.assert_allclose(ev["eval_spectral_mse"].sum("k"), ev["eval_mse"], rtol=1e-5)
    np.testing.assert_allclose(ev["eval_low_freq_mse"] + ev["eval_high_freq_mse"], ev["eval_mse"], rtol=1e-5)
    np.testing.assert_allclose(
        ev["eval_high_freq_error_ratio"], ev["eval_high_freq_mse"] / ev["eval_mse"], rtol=1e-5)

    # ... and re-derived in NumPy from reconstructions.zarr (every test sample is stored).
    recon = xr.open_zarr(out / "reconstructions.zarr").load()
    trained = ~metrics["held_out"].values
    cutoff = float(metrics.attrs["spectral_cutoff"])
    for row in range(progress["n_eval"]):
        ref = numpy_eval_metrics(recon["truth"].values, recon["recon"].values[row], trained, n_bins, cutoff)
        for var, value in ref.items():
            np.testing.assert_allclose(ev[var].values[row], value, rtol=2e-4, atol=1e-9, err_msg=var)

    final = read_json(out / "final.json")
    for key in ("final/test_rel_mse", "final/train_times_avg_mse", "final/held_out_avg_mse",
                "final/spectral/high_freq_error_ratio", "final/spectral/low_freq_mse",
                "final/spectral/high_freq_mse"):
        assert key in final, key
    held = metrics["held_out"].values
    for i in range(metrics.sizes["scale"]):
        key = f"final/held_out_mse_t{i}" if held[i] else f"final/train_time_mse_t{i}"
        assert final[key] == pytest.approx(float(ev["eval_scale_mse"].values[-1, i]), rel=1e-6)
    assert final["final/test_rel_mse"] == pytest.approx(float(ev["eval_rel_mse"].values[-1]), rel=1e-6)
    assert (out / "checkpoints" / "latest").is_dir()
    if "--save-best-model" in flags:
        assert (out / "checkpoints" / "best").is_dir()
