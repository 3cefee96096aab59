"""The variant tables (fae_lab.variants): every row has its code, everything that lists the
variants follows the tables, and the worked examples of docs/architecture.md ("Adding a loss",
"Adding a decoder variant") are true: a loss or decoder added in its module and in the table
reaches the command line, the run store's term names, the fake runs and the launch form."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from fae_lab import config as C
from fae_lab import losses, variants
from fae_lab.errors import UsageError
from fae_lab.grid import grid_coordinates
from fae_lab.losses import fourier_weighted_error, loss_terms
from fae_lab.models import build_model, count_parameters
from fae_lab.models import decoder as decoder_module
from fae_lab.models.decoder import DecoderParts, decoder_parts
from fae_lab.models.features import CoordinateFeatures
from fae_lab.testing.fake_runs import write_synthetic_run
from fae_lab.train.args import parse_run_config
from fae_lab.variants import DecoderVariant, LossVariant, register_decoder, register_loss

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture
def scratch_tables(monkeypatch):
    """Tables and registries the test may add to; the originals come back afterwards."""
    monkeypatch.setattr(variants, "LOSSES", dict(variants.LOSSES))
    monkeypatch.setattr(variants, "DECODERS", dict(variants.DECODERS))
    monkeypatch.setattr(losses, "_TERM_FUNCTIONS", dict(losses._TERM_FUNCTIONS))
    monkeypatch.setattr(decoder_module, "_PARTS", dict(decoder_module._PARTS))


def add_fourier_l2():
    """The worked example "Adding a loss" of docs/architecture.md, as written there."""
    # fae_lab/variants.py
    register_loss(LossVariant(
        "fourier_l2", ("l2", "fourier"), full_grid=True, sweepable=("freq_weight_power",),
        summary="mean e² + Σ_n w_n |ê_n|²"))

    # fae_lab/losses.py
    @loss_terms("fourier_l2")
    def _fourier_l2(error, p):
        return {"l2": jnp.mean(error**2),
                "fourier": fourier_weighted_error(error, p.freq_weight_power)}


def add_periodic_input():
    """The worked example "Adding a decoder variant" of docs/architecture.md."""
    # fae_lab/variants.py
    register_decoder(DecoderVariant(
        "periodic_input", summary="the standard MLP on integer-frequency (periodic) γ(x)"))

    # fae_lab/models/decoder.py
    @decoder_parts("periodic_input")
    def _periodic_input(cfg, resolution, shared, rngs):
        return DecoderParts(CoordinateFeatures("periodic", cfg.n_coordinate_frequencies,
                                               cfg.coordinate_sigma, resolution, rngs=rngs))


def test_every_row_has_its_code_and_nothing_else_does():
    assert set(variants.LOSSES) == set(losses._TERM_FUNCTIONS)
    assert set(variants.DECODERS) == set(decoder_module._PARTS)


def test_every_named_setting_is_a_setting_of_its_section():
    import dataclasses

    loss_settings = {f.name for f in dataclasses.fields(C.LossConfig)}
    model_settings = {f.name for f in dataclasses.fields(C.ModelConfig)}
    for row in variants.LOSSES.values():
        assert set(row.sweepable) | set(row.static) <= loss_settings, row.name
        assert not set(row.sweepable) & set(row.static), row.name
    for row in variants.DECODERS.values():
        assert set(row.settings) <= model_settings, row.name


def test_the_seeds_choices_and_terms_are_unchanged():
    # The seed's spellings, written out here (not read from the code under test).
    assert C.LOSS_TYPES == ("l2", "h1", "fourier_weighted", "combined")
    assert C.DECODER_TYPES == ("standard", "rff_output")
    assert C.LOSS_TERM_NAMES == {"l2": ("l2",), "h1": ("l2", "grad"),
                                 "fourier_weighted": ("fourier",), "combined": ("fourier", "grad")}
    assert C.FULL_GRID_LOSSES == ("h1", "fourier_weighted", "combined")
    assert variants.logged_loss_terms("combined") == ("fourier", "grad", "latent")
    assert variants.logged_loss_terms("h1", decoder_points=64) == ("l2", "latent")


def test_an_unknown_name_is_one_usage_line():
    for flag, query in (("--loss-type", variants.loss_variant),
                        ("--decoder-type", variants.decoder_variant)):
        with pytest.raises(UsageError, match=flag) as err:
            query("nope")
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="already registered"):
        register_loss(LossVariant("l2", ("l2",), full_grid=False))


def test_the_architecture_page_shows_the_tables_as_they_are():
    assert variants.markdown_table() in ARCHITECTURE.read_text()


@pytest.mark.slow
def test_adding_a_loss_touches_its_module_and_the_table(scratch_tables, tmp_path):
    add_fourier_l2()
    # The command line offers it, and refuses decoder point subsets (it needs the full grid).
    config = parse_run_config(["--loss-type", "fourier_l2", "--output-dir", str(tmp_path / "r")])
    assert config.loss.loss_type == "fourier_l2" and "fourier_l2" in C.LOSS_TYPES
    with pytest.raises(UsageError, match="fourier_l2 loss needs the full grid"):
        parse_run_config(["--loss-type", "fourier_l2", "--decoder-points", "8"])
    # The loss: l2 = mean e², and with p = 0 the Fourier term is mean e² too (unit-mean weights).
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    terms = losses.field_loss_terms(jnp.asarray(pred), jnp.asarray(target), loss_type="fourier_l2",
                                    lambda_grad=0.5, freq_weight_power=0.0)
    mse = np.mean((pred.astype(np.float64) - target) ** 2)
    assert list(terms) == ["l2", "fourier"]
    np.testing.assert_allclose([float(terms["l2"]), float(terms["fourier"])], [mse, mse], rtol=1e-5)
    # The run store's term names and the fake runs.
    run = write_synthetic_run(tmp_path / "fake", loss_type="fourier_l2", n_evals=3)
    ds = xr.open_zarr(run / "metrics.zarr")
    assert list(ds.attrs["loss_terms"]) == ["l2", "fourier", "latent"]
    total = ds.train_loss_l2 + ds.train_loss_fourier + ds.train_loss_latent
    np.testing.assert_allclose(ds.train_loss.values, total.values, rtol=1e-12)
    # The launch form's choices (lab.launcher declares the fields; the view builds from them).
    from lab.launcher import CHOICE_FIELDS, form_defaults, train_argv, validate_train_argv

    offered = {f.name: tuple(f.choices()) for f in CHOICE_FIELDS}
    assert "fourier_l2" in offered["loss_type"]
    values = dict(form_defaults(), loss_type="fourier_l2", max_steps=10, eval_every=5)
    assert validate_train_argv(train_argv(values, tmp_path / "launched")).loss.loss_type == "fourier_l2"


@pytest.mark.slow
def test_adding_a_decoder_variant_touches_its_module_and_the_table(scratch_tables, tmp_path):
    add_periodic_input()
    config = parse_run_config(["--decoder-type", "periodic_input", "--output-dir", str(tmp_path)])
    cfg = C.ModelConfig(decoder_type="periodic_input", latent_dim=4, encoder_hidden=(8,),
                        decoder_hidden=(8, 8), n_heads=2, n_coordinate_frequencies=3,
                        coordinate_features="gaussian", coordinate_sigma=2.0)
    assert config.model.decoder_type == "periodic_input"
    model = build_model(cfg, 8, seed=0)
    standard = build_model(C.ModelConfig(**{**cfg.__dict__, "decoder_type": "standard"}), 8)
    assert count_parameters(model) == count_parameters(standard)  # same widths, other γ
    # Integer frequencies: the decoded field is periodic on the unit square (a Gaussian γ of
    # σ = 2 is not), u(x + e_1) = u(x) = u(x + e_2).
    z = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4)), jnp.float32)
    x = jnp.asarray(grid_coordinates(8))
    for shift in ([1.0, 0.0], [0.0, 1.0]):
        np.testing.assert_allclose(model.decode(z, x + jnp.asarray([shift])), model.decode(z, x),
                                   atol=1e-4)
    assert not np.allclose(standard.decode(z, x + jnp.asarray([[1.0, 0.0]])), standard.decode(z, x),
                           atol=1e-4)
    run = write_synthetic_run(tmp_path / "fake", decoder_type="periodic_input", n_evals=3)
    assert xr.open_zarr(run / "metrics.zarr").attrs["tags"][2] == "periodic_input"


@pytest.mark.slow
def test_a_fake_run_of_a_loss_with_a_term_of_its_own_has_no_key_error(scratch_tables, tmp_path):
    register_loss(LossVariant("toy", ("l2", "toy"), full_grid=True))
    run = write_synthetic_run(tmp_path / "toy", loss_type="toy", n_evals=4)
    ds = xr.open_zarr(run / "metrics.zarr")
    assert list(ds.attrs["loss_terms"]) == ["l2", "toy", "latent"]
    assert np.isfinite(ds.train_loss_toy.values).all()


@pytest.mark.slow
def test_the_store_needs_neither_jax_nor_the_data_package():
    code = ("import sys, fae_lab.store, fae_lab.store.writer, fae_lab.store.layout; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax') "
            "or m.startswith('fae_lab.data') or m.startswith('fae_lab.testing')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_fake_runs_command_line_offers_the_tables_choices(tmp_path, capsys):
    from fae_lab.testing.fake_runs import main

    with pytest.raises(SystemExit):
        main([str(tmp_path / "x"), "--decoder-type", "nope"])
    err = capsys.readouterr().err
    assert all(re.search(rf"\b{name}\b", err) for name in variants.decoder_names())
