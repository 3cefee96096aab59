"""Every pooling x decoder variant builds, runs under jax.jit and under jax.vmap over a stack of
parameter sets (the sweep pattern: nnx.split once, merge inside a pure function)."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fae_lab.config import ModelConfig
from fae_lab.grid import grid_coordinates
from fae_lab.models import build_model

BASE = ModelConfig(
    latent_dim=4, encoder_hidden=(8, 8), decoder_hidden=(8, 8), n_heads=2,
    n_coordinate_frequencies=3, coordinate_features="periodic", rff_dim=6, rff_sigma=1.5,
)
DECODERS = [
    ("standard", "penultimate", None),
    *[("rff_output", location, None) for location in ("penultimate", "coordinates", "both")],
]
MULTIBAND = [("rff_output", location, (0.5, 2.0, 4.0)) for location in ("penultimate", "coordinates", "both")]
VARIANTS = [
    *itertools.product(("mean", "attention", "augmented_residual"), DECODERS),
    *[("augmented_residual", decoder) for decoder in MULTIBAND],
]


@pytest.mark.slow
@pytest.mark.parametrize("pooling, decoder", VARIANTS, ids=lambda v: "-".join(str(p) for p in v) if isinstance(v, tuple) else v)
def test_variant_runs_jitted_and_vmapped_over_parameter_sets(pooling, decoder):
    decoder_type, location, sigmas = decoder
    cfg = dataclasses.replace(BASE, pooling_type=pooling, decoder_type=decoder_type,
                              rff_location=location, rff_multiscale_sigmas=sigmas)
    resolution, batch = 8, 3
    members = [build_model(cfg, resolution, seed=seed) for seed in (0, 1)]
    splits = [nnx.split(m, nnx.Param, ...) for m in members]
    graphdef, _, fixed = splits[0]
    assert splits[1][0] == graphdef
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), splits[0][1], splits[1][1])

    grid = jnp.asarray(grid_coordinates(resolution))
    rng = np.random.default_rng(0)
    x_enc = jnp.asarray(rng.uniform(0, 1, (batch, 20, 2)), jnp.float32)  # scattered encoder points
    u_enc = jnp.asarray(rng.standard_normal((batch, 20)), jnp.float32)

    def apply(params, x_enc, u_enc, x_dec):
        return nnx.merge(graphdef, params, fixed)(x_enc, u_enc, x_dec)

    single = jax.jit(apply)
    swept = jax.jit(jax.vmap(apply, in_axes=(0, None, None, None)))
    u_hat, z = swept(stacked, x_enc, u_enc, grid)
    assert u_hat.shape == (2, batch, resolution**2) and z.shape == (2, batch, cfg.latent_dim)
    assert np.isfinite(np.asarray(u_hat)).all() and np.isfinite(np.asarray(z)).all()
    for i, (_, params, _) in enumerate(splits):
        u_one, z_one = single(params, x_enc, u_enc, grid)
        np.testing.assert_allclose(np.asarray(u_hat[i]), np.asarray(u_one), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(z[i]), np.asarray(z_one), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(u_hat[0] - u_hat[1])).max() > 1e-4  # two members, two functions


@pytest.mark.slow
def test_attention_pooling_matches_numpy():
    """Multi-head attention pooling re-derived in NumPy from its own parameters."""
    from fae_lab.models import AttentionPool

    pool = AttentionPool(8, 2, rngs=nnx.Rngs(3))
    h = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)
    got = np.asarray(pool(jnp.asarray(h)))
    w = np.asarray(pool.key_value.kernel[...], np.float64)
    b = np.asarray(pool.key_value.bias[...], np.float64)
    q = np.asarray(pool.query[...], np.float64)  # (heads, d)
    kv = (h.astype(np.float64) @ w + b).reshape(3, 5, 2, 2, 4)  # (B, P, key|value, heads, d)
    keys, values = kv[:, :, 0], kv[:, :, 1]
    logits = np.einsum("bpjd,jd->bjp", keys, q) / np.sqrt(4)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = np.einsum("bjp,bpjd->bjd", weights, values).reshape(3, 8)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_penultimate_fourier_features_match_numpy():
    """φ(h) = [cos 2π hB_k, sin 2π hB_k] for each band k, re-derived in NumPy."""
    from fae_lab.models import HiddenFourierFeatures

    phi = HiddenFourierFeatures(5, 6, (0.5, 2.0), rngs=nnx.Rngs(0, features=1))
    h = np.random.default_rng(1).normal(size=(4, 5))
    got = np.asarray(phi(jnp.asarray(h, jnp.float32)))
    frequencies = np.asarray(phi.frequencies[...], np.float64)  # (bands, 3, 5)
    assert frequencies.shape == (2, 3, 5)
    bands = []
    for matrix in frequencies:
        t = h.astype(np.float32).astype(np.float64) @ matrix.T
        bands += [np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)]
    expected = np.concatenate(bands, axis=-1)
    np.testing.assert_allclose(got, expected, atol=2e-5)
