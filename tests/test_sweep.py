"""``fae-lab sweep``: vmapped members equal separate runs; groups split by shape; devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from fae_lab.errors import UsageError
from fae_lab.sweep import grid_experiments, parse_grid
from fae_lab.sweep import main as sweep_main
from tests.train_helpers import assert_one_line_refusal, read_json, run_cli, write_tiny_data

SMALL = ["--pooling-type", "mean", "--encoder-hidden", "16,16", "--decoder-hidden", "16,16",
         "--latent-dim", "8", "--max-steps", "12", "--eval-every", "6", "--log-every", "3",
         "--batch-size", "4", "--steps-per-call", "3", "--n-devices", "1"]


def _metrics(run_dir):
    ds = xr.open_zarr(run_dir / "metrics.zarr").load()
    return {k: ds[k].values for k in ds.data_vars if "wall_time" not in k}


@pytest.mark.slow
def test_vmapped_members_match_the_same_runs_trained_one_by_one(tmp_path):
    data = write_tiny_data(tmp_path / "d.npz")
    grid = ["--grid", "seed=0,1", "--grid", "freq-weight-power=0.5,2"]
    flags = ["--", "--data-path", str(data), "--loss-type", "fourier_weighted", *SMALL]
    assert sweep_main(["--runs", str(tmp_path / "vmapped"), *grid, "--quiet", *flags]) == 0
    assert sweep_main(["--runs", str(tmp_path / "sequential"), *grid, "--sequential", "--quiet", *flags]) == 0
    names = sorted(p.name for p in (tmp_path / "vmapped").iterdir() if p.is_dir())
    assert names == ["seed=0_freq_weight_power=0.5", "seed=0_freq_weight_power=2",
                     "seed=1_freq_weight_power=0.5", "seed=1_freq_weight_power=2"]
    losses = []
    for name in names:
        a, b = _metrics(tmp_path / "vmapped" / name), _metrics(tmp_path / "sequential" / name)
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=2e-5, atol=1e-7, err_msg=f"{name}: {key}")
        cfg = read_json(tmp_path / "vmapped" / name / "config.json")["config"]
        assert f"seed={cfg['seed']}" in name and f"power={cfg['loss']['freq_weight_power']:g}" in name
        losses.append(a["train_loss"][0])
    assert len(set(np.round(losses, 12))) == 4  # the members really differ


@pytest.mark.slow
def test_shape_changing_values_train_as_separate_groups(tmp_path, capsys):
    data = write_tiny_data(tmp_path / "d.npz")
    assert sweep_main(["--runs", str(tmp_path / "r"), "--grid", "rff-dim=8,16",
                       "--", "--data-path", str(data), "--decoder-type", "rff_output", *SMALL]) == 0
    err = capsys.readouterr().err
    assert "as one vmapped program" not in err  # two groups of one
    for dim in (8, 16):
        cfg = read_json(tmp_path / "r" / f"rff_dim={dim}" / "config.json")
        assert cfg["config"]["model"]["rff_dim"] == dim
        assert read_json(tmp_path / "r" / f"rff_dim={dim}" / "progress.json")["status"] == "finished"


@pytest.mark.parametrize("grid, named", [(["--grid", "bogus=1,2"], "bogus"),
                                         (["--grid", "seed"], "--grid"),
                                         (["--grid", "output_dir=a,b"], "output-dir"),
                                         (["--grid", "beta=-1,2"], "--beta")])
@pytest.mark.slow
def test_bad_grid_gets_one_line_and_status_2(grid, named, tmp_path):
    result = run_cli("sweep", "--runs", str(tmp_path / "r"), *grid, "--", "--max-steps", "2")
    assert_one_line_refusal(result, named)


def test_grid_values_with_commas_use_semicolons():
    axes = parse_grid(["rff-multiscale-sigmas=1,2;2,4", "seed=0,1"])
    assert axes == [("rff-multiscale-sigmas", ["1,2", "2,4"]), ("seed", ["0", "1"])]
    assert len(grid_experiments(axes)) == 4


def test_a_list_value_split_on_its_commas_is_refused_naming_the_semicolon_form(tmp_path):
    """``decoder-hidden=256,256,256`` is three grid values of 256 (three members in one folder):
    refused in one line that names the repeated value and the ``;`` spelling, which works."""
    result = run_cli("sweep", "--runs", str(tmp_path / "r"), "--grid", "decoder-hidden=256,256,256",
                     "--", "--max-steps", "2")
    assert_one_line_refusal(result, "decoder-hidden=256,256,256;")
    assert "'256' is given 3 times" in result.stderr
    assert not (tmp_path / "r").exists()  # refused before anything is written
    assert parse_grid(["decoder-hidden=256,256,256;"]) == [("decoder-hidden", ["256,256,256"])]
    assert parse_grid(["decoder-hidden=256,256,256;128,128"]) == [
        ("decoder-hidden", ["256,256,256", "128,128"])]
    with pytest.raises(UsageError, match="'1' is given 2 times"):
        parse_grid(["seed=1;1"])


def test_grid_names_may_be_spelled_with_underscores():
    """``freq_weight_power`` names the same flag as ``freq-weight-power``: each member's
    train command line gets the flag's spelling."""
    axes = parse_grid(["freq_weight_power=1,2"])
    assert axes == [("freq-weight-power", ["1", "2"])]
    argvs = [e.argv for e in grid_experiments(axes)]
    assert all("--freq-weight-power" in a for a in argvs), argvs


DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, xarray as xr
    from fae_lab.train.args import parse_run_config
    from fae_lab.train.run import train_group
    from fae_lab.train.devices import plan_placement
    assert len(jax.devices()) == 4, jax.devices()
    data, out = sys.argv[1], sys.argv[2]
    small = %r
    def cfg(name, *extra):
        return parse_run_config(["--data-path", data, "--output-dir", f"{out}/{name}", *small, *extra])
    result = {}
    # data parallel: one run, batch 8 over 4 devices vs 1 device
    result["mode_data"] = plan_placement(1, 8, None).mode
    train_group([cfg("dp4", "--n-devices", "4", "--batch-size", "8")], quiet=True)
    train_group([cfg("dp1", "--n-devices", "1", "--batch-size", "8")], quiet=True)
    # data parallel with the fused Pallas encoder (interpreted here), one kernel per device
    train_group([cfg("dp4p", "--n-devices", "4", "--batch-size", "8", "--kernels", "pallas")], quiet=True)
    # data parallel with encoder and decoder point subsets (each device takes its samples' sets)
    masked = ["--batch-size", "8", "--encoder-points", "40", "--decoder-points", "50"]
    train_group([cfg("dp4m", "--n-devices", "4", *masked)], quiet=True)
    train_group([cfg("dp1m", "--n-devices", "1", *masked)], quiet=True)
    # members: 4 seeds over 4 devices vs the same 4 on one device
    result["mode_members"] = plan_placement(4, 4, None).mode
    train_group([cfg(f"m4_{s}", "--seed", str(s), "--n-devices", "4") for s in range(4)], quiet=True)
    train_group([cfg(f"m1_{s}", "--seed", str(s), "--n-devices", "1") for s in range(4)], quiet=True)
    def loss(name):
        return xr.open_zarr(f"{out}/{name}/metrics.zarr")["train_loss"].values.tolist()
    result["dp4"], result["dp1"], result["dp4p"] = loss("dp4"), loss("dp1"), loss("dp4p")
    result["dp4m"], result["dp1m"] = loss("dp4m"), loss("dp1m")
    result["m4"] = [loss(f"m4_{s}") for s in range(4)]
    result["m1"] = [loss(f"m1_{s}") for s in range(4)]
    print(json.dumps(result))
""")


@pytest.mark.slow
def test_several_devices_give_the_same_loss_curves_as_one(tmp_path):
    import json

    data = write_tiny_data(tmp_path / "d.npz")
    small = [f for f in SMALL if f not in ("--n-devices", "1")]
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    script = tmp_path / "devices.py"
    script.write_text(DEVICE_SCRIPT % (small,))
    proc = subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=600, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mode_data"] == "data" and result["mode_members"] == "members"
    np.testing.assert_allclose(result["dp4"], result["dp1"], rtol=1e-4)
    np.testing.assert_allclose(result["dp4p"], result["dp1"], rtol=1e-4)
    np.testing.assert_allclose(result["dp4m"], result["dp1m"], rtol=1e-4)
    assert not np.allclose(result["dp1m"], result["dp1"], rtol=1e-3)  # the subsets were used
    np.testing.assert_allclose(result["m4"], result["m1"], rtol=1e-5)
    assert np.all(np.isfinite(result["dp4"]))
