"""The command line and config file of ``fae-lab train``, and the seed's schedules."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from fae_lab.config import tags
from fae_lab.errors import UsageError
from fae_lab.train.args import parse_run_config
from fae_lab.train.cli import main as train_main
from fae_lab.train.step import (
    active_scale_count,
    hyper_from_config,
    lambda_grad_at,
    learning_rate_at,
)
from tests.train_helpers import write_tiny_data


def test_config_file_is_read_and_flags_override_it(tmp_path):
    settings = tmp_path / "run.yaml"
    settings.write_text("loss_type: h1\nlambda_grad: 0.25\nrff_multiscale_sigmas: [0.5, 1.0]\n"
                        "decoder-type: rff_output\nsave_best_model: true\n")
    config = parse_run_config(["--config", str(settings), "--lambda-grad", "0.75"])
    assert config.loss.loss_type == "h1" and config.loss.lambda_grad == 0.75
    assert config.model.rff_multiscale_sigmas == (0.5, 1.0) and config.save_best_model
    assert tags(config) == ["multi_scale", "h1", "rff_output", "attention"]


def test_later_flags_override_earlier_ones():
    config = parse_run_config(["--loss-type", "h1", "--max-steps", "50000", "--loss-type", "l2",
                               "--max-steps", "7"])
    assert config.loss.loss_type == "l2" and config.max_steps == 7


@pytest.mark.parametrize("text, named", [("loss_type: h9\n", "--loss-type"),
                                         ("bogus_setting: 1\n", "bogus_setting"),
                                         ("[unclosed\n", "--config")])
def test_bad_config_files_name_the_setting(text, named, tmp_path, capsys):
    settings = tmp_path / "bad.yaml"
    settings.write_text(text)
    with pytest.raises((UsageError, SystemExit)) as info:
        parse_run_config(["--config", str(settings)])
    message = str(info.value) if isinstance(info.value, UsageError) else capsys.readouterr().err
    assert named in message and message.strip().count("\n") == 0


@pytest.mark.slow
def test_schedules_follow_their_closed_forms():
    config = parse_run_config(["--learning-rate", "0.01", "--lr-decay-rate", "0.5", "--lr-decay-steps", "10",
                               "--lambda-grad", "1.0", "--lambda-grad-start", "0.2",
                               "--lambda-grad-warmup-steps", "40", "--curriculum-steps", "25"])
    hyper = hyper_from_config(config)
    for step in (0, 9, 10, 35, 100):
        s = jnp.asarray(step)
        assert float(learning_rate_at(hyper, s)) == pytest.approx(0.01 * 0.5 ** (step // 10))
        assert float(lambda_grad_at(hyper, s)) == pytest.approx(0.2 + 0.8 * min(step / 40, 1.0))
        assert int(active_scale_count(hyper, s, 3)) == min(1 + step // 25, 3)
    off = hyper_from_config(parse_run_config(["--lambda-grad", "0.5"]))
    assert float(lambda_grad_at(off, jnp.asarray(3))) == pytest.approx(0.5)
    assert int(active_scale_count(off, jnp.asarray(0), 4)) == 4


@pytest.mark.slow
def test_lambda_grad_warmup_is_logged_per_row(tmp_path):
    data = write_tiny_data(tmp_path / "d.npz")
    out = tmp_path / "run"
    assert train_main(["--data-path", str(data), "--output-dir", str(out), "--loss-type", "h1",
                       "--lambda-grad", "1.0", "--lambda-grad-warmup-steps", "8", "--max-steps", "12",
                       "--log-every", "2", "--eval-every", "6", "--batch-size", "4", "--steps-per-call", "3",
                       "--pooling-type", "mean", "--encoder-hidden", "8", "--decoder-hidden", "8"]) == 0
    ds = xr.open_zarr(out / "metrics.zarr")
    # Row r ends at step 2(r+1); the value logged is the one in force at that row's last step,
    # i.e. the step index 2(r+1) - 1.
    steps = np.arange(2, 13, 2)  # a row every 2 of 12 steps
    np.testing.assert_array_equal(ds["step"].values, steps)
    expected = np.minimum((steps - 1) / 8, 1.0)
    np.testing.assert_allclose(ds["lambda_grad"].values, expected, rtol=1e-6)
