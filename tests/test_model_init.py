"""Models constructed in one jitted program (fae_lab.models.initialise) hold the parameters the
eager constructors draw, and a process's later groups reuse their programs (fae_lab.train.run)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from flax import nnx

from fae_lab.config import ModelConfig
from fae_lab.errors import UsageError
from fae_lab.models.autodecoder import LatentDecoder, build_rung_model
from fae_lab.models.fae import FunctionalAutoencoder, build_model
from fae_lab.spectral import radial_bins
from fae_lab.train import run as train_run
from fae_lab.train.cli import main as train_main
from fae_lab.train.step import StepStatics
from tests.train_helpers import TINY, write_tiny_data

SMALL = ModelConfig(latent_dim=6, encoder_hidden=(12, 12), decoder_hidden=(10, 10, 10), n_heads=3,
                    n_coordinate_frequencies=5, rff_dim=8, feature_seed=4)
CONFIGS = {
    "standard": dataclasses.replace(SMALL, pooling_type="mean"),
    "attention": SMALL,
    "rff_coordinates_and_penultimate": dataclasses.replace(
        SMALL, pooling_type="mean", decoder_type="rff_output", rff_location="both",
        rff_multiscale_sigmas=(1.0, 4.0), coordinate_features="periodic", coordinate_sigma=3.0),
}


def leaves(model: nnx.Module) -> list[tuple[str, type, np.ndarray]]:
    """Every variable of ``model``: its path, its kind (Param, FourierBasis, ...) and its value."""
    return [("/".join(map(str, path)), type(var), np.asarray(var.get_value()))
            for path, var in nnx.to_flat_state(nnx.state(model))]


def assert_same_model(jitted: nnx.Module, eager: nnx.Module) -> None:
    """Same structure and static attributes, same variable kinds, the same values to a few
    float32 ulps (bit for bit under XLA's default flags; under the tests' flags, without the
    expensive LLVM passes, the jitted program rounds a few draws differently in the last place)."""
    assert nnx.graphdef(jitted) == nnx.graphdef(eager)
    got, want = leaves(jitted), leaves(eager)
    assert [(p, t) for p, t, _ in got] == [(p, t) for p, t, _ in want]
    for (path, _, a), (_, _, b) in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_allclose(a, b, rtol=2.5e-7, atol=5e-8, err_msg=path)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_jitted_construction_draws_the_eager_parameters(name):
    cfg = CONFIGS[name]
    dtypes = (jnp.float32, jnp.bfloat16) if name == "attention" else (jnp.float32,)
    for dtype in dtypes:
        eager = FunctionalAutoencoder(cfg, 16, compute_dtype=dtype, rngs=nnx.Rngs(7, features=cfg.feature_seed))
        assert_same_model(build_model(cfg, 16, seed=7, compute_dtype=dtype), eager)


@pytest.mark.slow
def test_the_seeds_are_arguments_of_the_jitted_construction():
    """Another seed draws other trained parameters and the same fixed Fourier matrices; another
    feature seed draws other Fourier matrices."""
    cfg = CONFIGS["rff_coordinates_and_penultimate"]
    a = {p: v for p, _, v in leaves(build_model(cfg, 16, seed=7))}
    b = {p: v for p, _, v in leaves(build_model(cfg, 16, seed=8))}
    c = {p: v for p, _, v in leaves(build_model(dataclasses.replace(cfg, feature_seed=5), 16, seed=7))}
    fixed = [p for p in a if "frequencies" in p]
    assert len(fixed) == 3 and all(np.array_equal(a[p], b[p]) for p in fixed)
    assert not any(np.array_equal(a[p], c[p]) for p in fixed)
    trained = [p for p in a if "kernel" in p]
    assert trained and not any(np.array_equal(a[p], b[p]) for p in trained)


@pytest.mark.slow
@pytest.mark.parametrize("rung", ["auto_decoder", "decoder_alone"])
def test_jitted_ladder_rungs_draw_the_eager_parameters(rung):
    cfg = dataclasses.replace(SMALL, rung=rung)
    eager = LatentDecoder(cfg, 16, 12, trained=rung == "auto_decoder", rngs=nnx.Rngs(3, features=cfg.feature_seed))
    jitted = build_rung_model(cfg, 16, 12, seed=3)
    assert_same_model(jitted, eager)
    kinds = {p: t.__name__ for p, t, _ in leaves(jitted)}
    assert kinds["latents"] == ("Param" if rung == "auto_decoder" else "FixedLatent")


def test_periodic_features_too_few_nonzero_rows_are_refused_from_a_jitted_construction():
    """The check of the drawn rows, which a traced constructor cannot make, runs on the model."""
    cfg = dataclasses.replace(SMALL, pooling_type="mean", coordinate_features="periodic", coordinate_sigma=0.01)
    with pytest.raises(UsageError, match=r"sigma=0\.01 is too small"):
        build_model(cfg, 16)
    with pytest.raises(UsageError, match=r"sigma=0\.01 is too small"):
        build_rung_model(dataclasses.replace(cfg, rung="auto_decoder"), 16, 4)


def test_group_programs_are_kept_per_model_and_step():
    model = build_model(CONFIGS["standard"], 16)
    graphdef = nnx.split(model, nnx.Param, ...)[0]
    other = nnx.split(build_model(CONFIGS["attention"], 16), nnx.Param, ...)[0]
    statics = StepStatics("l2", "finite_difference", None, 16, 4, None, None)
    bins = radial_bins(16, 8)
    first = train_run.group_programs(graphdef, statics, None, bins, 4.0, 2)
    assert train_run.group_programs(graphdef, statics, None, bins, 4.0, 2) is first
    assert train_run.group_programs(other, statics, None, bins, 4.0, 2) is not first
    assert train_run.group_programs(graphdef, dataclasses.replace(statics, batch_size=8), None, bins,
                                    4.0, 2) is not first
    assert train_run.group_programs(graphdef, statics, None, bins, 4.0, 3) is not first
    assert len(train_run._PROGRAMS) <= train_run._PROGRAMS_KEPT
    # another loss, the same model: another training step, the same evaluation program
    fourier = train_run.group_programs(graphdef, dataclasses.replace(statics, loss_type="fourier"), None,
                                       bins, 4.0, 2)
    assert fourier is not first and fourier.step_fn is not first.step_fn
    assert fourier.evaluate is first.evaluate
    assert train_run.group_programs(other, statics, None, bins, 4.0, 2).evaluate is not first.evaluate
    assert train_run.group_programs(graphdef, statics, None, bins, 4.0, 3).evaluate is not first.evaluate
    assert train_run.group_programs(graphdef, statics, None, bins, 4.0, 2,
                                    members_in_turn=False).evaluate is not first.evaluate
    assert len(train_run._EVALUATIONS) <= train_run._PROGRAMS_KEPT


@pytest.mark.slow
def test_a_run_on_reused_programs_equals_the_same_run_on_fresh_ones(tmp_path):
    """A run of another seed on the kept programs of an earlier run in the process gives what
    it gives on programs made for it (nothing of the earlier run is baked into them). The flags
    are tests/test_train_engine.py's, whose programs the session has usually compiled."""
    data = write_tiny_data(tmp_path / "d.npz")
    flags = ["--data-path", str(data), "--pooling-type", "mean", "--encoder-hidden", "32,32",
             "--decoder-hidden", "32,32,32", "--latent-dim", "16", *TINY]
    train_run._PROGRAMS.clear()
    assert train_main([*flags, "--output-dir", str(tmp_path / "first"), "--seed", "0"]) == 0
    kept = dict(train_run._PROGRAMS)
    assert len(kept) == 1
    assert train_main([*flags, "--output-dir", str(tmp_path / "reused"), "--seed", "1"]) == 0
    assert train_run._PROGRAMS == kept  # the second run took the first one's programs
    train_run._PROGRAMS.clear()
    assert train_main([*flags, "--output-dir", str(tmp_path / "fresh"), "--seed", "1"]) == 0
    assert train_run._PROGRAMS != kept
    reused = xr.open_zarr(tmp_path / "reused" / "metrics.zarr").load()
    fresh = xr.open_zarr(tmp_path / "fresh" / "metrics.zarr").load()
    first = xr.open_zarr(tmp_path / "first" / "metrics.zarr").load()
    for name in reused.data_vars:
        if "wall_time" not in name:
            np.testing.assert_array_equal(reused[name].values, fresh[name].values, err_msg=name)
    assert not np.array_equal(reused["train_loss"].values, first["train_loss"].values)  # other seed


@pytest.mark.slow
def test_a_config_holding_a_list_is_constructed_too():
    """Unhashable settings (a hand-made config with a list of widths) cannot key a kept
    program: the model is still built, with the same parameters."""
    cfg = CONFIGS["standard"]
    listed = dataclasses.replace(cfg, decoder_hidden=list(cfg.decoder_hidden))
    assert_same_model(build_model(listed, 16, seed=2), build_model(cfg, 16, seed=2))
