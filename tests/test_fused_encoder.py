"""The fused Pallas encoder (fae_lab.models.fused), run here in Pallas' interpreter.

On the GPU the same kernels are compiled by Triton; benchmarks/bench_fused.py checks them
there against XLA at the highest matmul precision. Here every value and gradient is checked
against the XLA path of the same model, and a whole training run against an XLA one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from flax import nnx

from fae_lab.config import ModelConfig, RunConfig
from fae_lab.errors import UsageError
from fae_lab.models import build_model, fused
from fae_lab.train.run import use_fused_encoder
from tests.train_helpers import (
    TINY,
    assert_fused_run_follows_xla,
    assert_one_line_refusal,
    read_json,
    run_cli,
    write_tiny_data,
)

SMALL = ModelConfig(encoder_hidden=(24, 24, 24), decoder_hidden=(16, 16), latent_dim=8,
                    n_coordinate_frequencies=5, pooling_type="mean")


def _encoder_pair(cfg, resolution=16, seed=3):
    plain = build_model(cfg, resolution, seed=seed)
    fused_model = build_model(cfg, resolution, seed=seed, fused_encoder=True)
    return plain, fused_model


def _loss_and_grads(model, x, u, cotangent):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p, rest).encode(x, u) * cotangent)

    return jax.value_and_grad(loss)(params)


@pytest.mark.slow
@pytest.mark.parametrize("shared_points", [True, False])
@pytest.mark.parametrize("n_points", [64, 37])
def test_fused_encoder_matches_xla_in_value_and_every_gradient(shared_points, n_points):
    """Same parameters (same seed), random fields and coordinates: the fused encoder's z and
    the gradient of a random projection of z with respect to every parameter agree with the
    XLA path to float32 rounding; 37 points exercise the padded last tile (zero weight)."""
    rng = np.random.default_rng(n_points + shared_points)
    plain, fused_model = _encoder_pair(SMALL)
    batch = 3
    shape = (n_points, 2) if shared_points else (batch, n_points, 2)
    x = jnp.asarray(rng.uniform(size=shape), jnp.float32)
    u = jnp.asarray(rng.normal(size=(batch, n_points)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(batch, SMALL.latent_dim)), jnp.float32)
    value, grads = _loss_and_grads(plain, x, u, cotangent)
    fused_value, fused_grads = _loss_and_grads(fused_model, x, u, cotangent)
    assert float(fused_value) == pytest.approx(float(value), rel=1e-5)
    flat, fused_flat = dict(grads.flat_state()), dict(fused_grads.flat_state())
    assert flat.keys() == fused_flat.keys()
    encoder_keys = [k for k in flat if k[0] == "encoder"]
    assert len(encoder_keys) == 2 * 4 + 1  # 3 factorised (2 kernels + bias), 2 hidden, to_latent
    for key in encoder_keys:
        a, b = np.asarray(flat[key].get_value()), np.asarray(fused_flat[key].get_value())
        assert np.linalg.norm(a) > 0, key
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-6 * np.abs(a).max(), err_msg=str(key))


@pytest.mark.slow
def test_padded_points_do_not_count_in_the_mean():
    """Repeating every point twice leaves a mean unchanged; padding must not add points."""
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(2, 20, 6)), jnp.float32)
    u = jnp.asarray(rng.normal(size=(2, 20)), jnp.float32)
    w0 = jnp.asarray(rng.normal(size=(6, 12)), jnp.float32)
    b0, wu = jnp.asarray(rng.normal(size=12), jnp.float32), jnp.asarray(rng.normal(size=12), jnp.float32)
    tiling = fused.Tiling(rows=16, chunk_rows=32, interpret=True)
    once = fused.mean_embedding(features, u, w0, b0, wu, [], [], tiling=tiling)
    twice = fused.mean_embedding(jnp.concatenate([features, features], 1), jnp.concatenate([u, u], 1),
                                 w0, b0, wu, [], [], tiling=tiling)
    # NumPy, independently: mean over points of GELU(f W0 + b0 + u wu) (tanh form).
    pre = np.asarray(features, np.float64) @ np.asarray(w0, np.float64) + np.asarray(b0) + \
        np.asarray(u, np.float64)[..., None] * np.asarray(wu)
    gelu = 0.5 * pre * (1 + np.tanh(np.sqrt(2 / np.pi) * (pre + 0.044715 * pre**3)))
    np.testing.assert_allclose(np.asarray(once), gelu.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(twice), np.asarray(once), rtol=1e-5, atol=1e-6)


def test_when_the_fused_encoder_is_used():
    base = RunConfig(model=dataclasses.replace(ModelConfig(), pooling_type="mean"))
    assert use_fused_encoder(dataclasses.replace(base, kernels="xla"), "single") is False
    # auto: only on a GPU (this suite runs on the CPU)
    assert use_fused_encoder(base, "single") is (jax.default_backend() == "gpu")
    assert use_fused_encoder(base, "data") is (jax.default_backend() == "gpu")
    assert use_fused_encoder(dataclasses.replace(base, kernels="pallas"), "single") is True
    assert use_fused_encoder(dataclasses.replace(base, kernels="pallas"), "data") is True
    attention = dataclasses.replace(base, kernels="pallas",
                                    model=dataclasses.replace(base.model, pooling_type="attention"))
    assert use_fused_encoder(attention, "single") is True  # every pooling type is fused
    assert use_fused_encoder(dataclasses.replace(
        attention, model=dataclasses.replace(base.model, pooling_type="augmented_residual")), "single") is True
    with pytest.raises(UsageError, match="precision bf16"):
        use_fused_encoder(dataclasses.replace(base, kernels="pallas", precision="bf16"), "single")
    with pytest.raises(UsageError, match="members spread over several devices"):
        use_fused_encoder(dataclasses.replace(base, kernels="pallas"), "members")
    assert use_fused_encoder(dataclasses.replace(attention, kernels="auto"), "single") is (
        jax.default_backend() == "gpu")
    with pytest.raises(UsageError, match="precision bf16"):
        use_fused_encoder(dataclasses.replace(attention, precision="bf16"), "single")
    assert use_fused_encoder(base, "members") is False


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data") / "tiny.npz", resolution=8)


@pytest.mark.slow
def test_training_with_the_fused_encoder_follows_the_xla_run(tiny_data, tmp_path):
    """Same seed and data, ``--kernels pallas`` (interpreted) vs ``--kernels xla``: the same
    loss and evaluation curves to float32 tolerance, and the store says which kernel ran."""
    assert_fused_run_follows_xla(tiny_data, tmp_path, [
        "--pooling-type", "mean", "--encoder-hidden", "16,16", "--decoder-hidden", "16,16",
        "--latent-dim", "8", "--encoder-points", "40"])
    versions = read_json(tmp_path / "xla" / "config.json")["versions"]
    assert versions["encoder_kernel"] == "xla"
    assert versions["decoder_kernel"] == "xla"  # the fused decoder needs a Hopper GPU


@pytest.mark.slow
def test_impossible_kernel_request_gets_one_line_and_status_2(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--data-path", str(tiny_data), "--output-dir", str(out), *TINY,
                     "--kernels", "pallas", "--pooling-type", "attention", "--precision", "bf16")
    assert_one_line_refusal(result, "--kernels pallas")
    assert not out.exists()


@pytest.mark.slow
def test_vmapped_members_with_the_fused_encoder_follow_their_xla_runs(tiny_data, tmp_path):
    """Two seeds as one vmapped group: the batched Pallas call gives each member the curve
    of the same member trained through XLA."""
    from fae_lab.train.args import parse_run_config
    from fae_lab.train.run import train_group

    def group(kernels):
        return [parse_run_config(["--data-path", str(tiny_data), "--pooling-type", "mean",
                                  "--encoder-hidden", "16", "--decoder-hidden", "16", "--latent-dim", "4",
                                  *TINY, "--max-steps", "5", "--seed", str(seed), "--kernels", kernels,
                                  "--n-devices", "1", "--output-dir", str(tmp_path / f"{kernels}{seed}")])
                for seed in (0, 1)]

    train_group(group("xla"), quiet=True)
    train_group(group("pallas"), quiet=True)
    losses = {}
    for kernels in ("xla", "pallas"):
        for seed in (0, 1):
            losses[kernels, seed] = xr.open_zarr(tmp_path / f"{kernels}{seed}" / "metrics.zarr")["train_loss"].values
    assert not np.allclose(losses["xla", 0], losses["xla", 1])  # the members differ
    for seed in (0, 1):
        np.testing.assert_allclose(losses["pallas", seed], losses["xla", seed], rtol=1e-4, atol=1e-7)
