"""The FAE models: sizes, feature maps, the factorised layers, symmetries and precision."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fae_lab.config import ModelConfig
from fae_lab.errors import UsageError
from fae_lab.grid import grid_coordinates
from fae_lab.models import (
    CoordinateFeatures,
    FourierBasis,
    HiddenFourierFeatures,
    build_model,
    count_parameters,
)

REFERENCE = ModelConfig(
    pooling_type="mean", decoder_type="standard", latent_dim=64, encoder_hidden=(64, 64, 64),
    decoder_hidden=(100,) * 5, coordinate_features="gaussian", n_coordinate_frequencies=16,
    coordinate_sigma=1.0,
)
SMALL = ModelConfig(
    pooling_type="mean", decoder_type="standard", latent_dim=6, encoder_hidden=(12, 12),
    decoder_hidden=(10, 10, 10), n_heads=3, coordinate_features="gaussian",
    n_coordinate_frequencies=5, coordinate_sigma=1.0, rff_dim=8,
)


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def np_gelu(v):
    """The tanh form of GELU (Hendrycks & Gimpel), as jax.nn.gelu's default."""
    return 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v**3)))


def np_gamma(x, freqs):
    """[cos 2πBx, sin 2πBx] of every band, concatenated: x (..., 2), freqs (K, n, 2)."""
    parts = []
    for band in np.asarray(freqs, np.float64):
        phase = 2 * np.pi * np.asarray(x, np.float64) @ band.T
        parts += [np.cos(phase), np.sin(phase)]
    return np.concatenate(parts, axis=-1)


def smooth_field(x):
    """A smooth periodic test function u(x, y) on the unit torus; x (..., 2)."""
    x = np.asarray(x, np.float64)
    return np.sin(2 * np.pi * x[..., 0]) * np.cos(2 * np.pi * x[..., 1]) + 0.5 * np.cos(
        2 * np.pi * (x[..., 0] + 2 * x[..., 1])
    )


def params_of(model):
    """Every nnx.Param as float64 NumPy, by path."""
    flat = nnx.state(model, nnx.Param).flat_state()
    return {tuple(str(k) for k in path): np.asarray(v.get_value(), np.float64) for path, v in flat}


@functools.cache
def model_for(cfg, resolution, seed=0, compute_dtype=jnp.float32):
    """Built once per setting: eager construction compiles each initialiser shape."""
    return build_model(cfg, resolution, seed=seed, compute_dtype=compute_dtype)


@nnx.jit
def run(model, x_enc, u_enc, x_dec):
    return model(x_enc, u_enc, x_dec)


@nnx.jit
def encode(model, x, u):
    return model.encode(x, u)


@nnx.jit
def decode(model, z, x):
    return model.decode(z, x)


def field_batch(resolution, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    x = grid_coordinates(resolution)
    u = np.stack([smooth_field(x) * (1 + 0.3 * rng.standard_normal()) for _ in range(batch)])
    return jnp.asarray(x), jnp.asarray(u, jnp.float32)


# ---------------------------------------------------------------- sizes


@pytest.mark.slow
def test_reference_configuration_has_the_papers_parameter_count():
    gamma = 2 * 16
    encoder = dense(gamma + 1, 64) + 2 * dense(64, 64) + dense(64, 64)
    decoder = dense(64 + gamma, 100) + 4 * dense(100, 100) + dense(100, 1)
    assert encoder + decoder == 64_857  # Bunker et al., "Autoencoders in Function Space"
    assert count_parameters(model_for(REFERENCE, 64)) == encoder + decoder


@pytest.mark.slow
def test_fourier_matrices_are_not_parameters():
    cfg = dataclasses.replace(REFERENCE, decoder_type="rff_output", rff_location="penultimate",
                              rff_dim=256, rff_multiscale_sigmas=(0.5, 1.0, 2.0, 4.0))
    model = build_model(cfg, 64)
    expected = 64_857 - dense(100, 1) + dense(4 * 256, 1)  # the reference, readout widened
    assert count_parameters(model) == expected
    bases = nnx.state(model, FourierBasis).flat_state()
    shapes = sorted(tuple(v.get_value().shape) for _, v in bases)
    assert shapes == sorted([(1, 16, 2), (4, 128, 100)])
    assert not any(isinstance(v, FourierBasis) for _, v in nnx.state(model, nnx.Param).flat_state())


def test_attention_pooling_adds_key_value_and_query_parameters():
    widths = REFERENCE.encoder_hidden
    base = 64_857  # the reference configuration (test above)
    cfg = dataclasses.replace(REFERENCE, pooling_type="attention", n_heads=8)
    assert count_parameters(build_model(cfg, 64)) == base + dense(64, 128) + widths[-1]


# ---------------------------------------------------------------- feature maps


@pytest.mark.slow
def test_gaussian_coordinate_features_follow_the_formula_and_sigma():
    sigma = 3.0
    features = CoordinateFeatures("gaussian", 4096, sigma, None, rngs=nnx.Rngs(1))
    freqs = np.asarray(features.frequencies.get_value())
    assert freqs.shape == (1, 4096, 2)
    assert abs(freqs.std() / sigma - 1) < 0.05 and abs(freqs.mean()) < 0.1
    x = np.random.default_rng(0).uniform(0, 1, (7, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(features(jnp.asarray(x))), np_gamma(x, freqs), atol=2e-5)


@pytest.mark.slow
def test_multiband_coordinate_features_concatenate_one_block_per_sigma():
    features = CoordinateFeatures("gaussian", 64, (0.5, 8.0), None, rngs=nnx.Rngs(2))
    freqs = np.asarray(features.frequencies.get_value())
    assert features(jnp.zeros((3, 2))).shape == (3, 2 * 2 * 64)
    assert freqs[1].std() / freqs[0].std() > 8  # the bands really have different scales
    x = np.random.default_rng(1).uniform(0, 1, (5, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(features(jnp.asarray(x))), np_gamma(x, freqs), atol=2e-5)
    np.testing.assert_allclose(np.asarray(features.bands(jnp.asarray(x))).reshape(5, -1),
                               np_gamma(x, freqs), atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("sigma", [0.4, 1.0, 50.0])
def test_periodic_features_are_integer_clipped_and_never_constant(sigma):
    resolution = 16
    features = CoordinateFeatures("periodic", 300, sigma, resolution, rngs=nnx.Rngs(3))
    freqs = np.asarray(features.frequencies.get_value())
    np.testing.assert_array_equal(freqs, np.round(freqs))
    assert np.abs(freqs).max() <= resolution // 2
    assert np.all(np.any(freqs != 0, axis=-1))
    x = grid_coordinates(resolution)
    shifted = np.asarray(features(jnp.asarray(x + np.float32([1.0, -1.0]))))
    np.testing.assert_allclose(shifted, np.asarray(features(jnp.asarray(x))), atol=1e-6)


def test_periodic_features_with_a_vanishing_sigma_are_refused():
    with pytest.raises(UsageError, match="sigma"):
        CoordinateFeatures("periodic", 16, 0.01, 64, rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_hidden_fourier_features_follow_the_formula():
    features = HiddenFourierFeatures(5, 6, (1.0, 2.0), rngs=nnx.Rngs(4))
    freqs = np.asarray(features.frequencies.get_value(), np.float64)  # (2, 3, 5)
    h = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32)
    expected = np.concatenate(
        [np.concatenate([np.cos(2 * np.pi * h @ b.T), np.sin(2 * np.pi * h @ b.T)], -1) for b in freqs],
        axis=-1,
    )
    np.testing.assert_allclose(np.asarray(features(jnp.asarray(h))), expected, atol=2e-5)
    with pytest.raises(UsageError, match="--rff-dim"):
        HiddenFourierFeatures(5, 7, 1.0, rngs=nnx.Rngs(0))


def test_hidden_fourier_sigma_is_per_unit_rms_of_the_activations():
    # B ~ N(0, sigma^2 / d): the phase 2*pi*B.h of an h with unit rms has std 2*pi*sigma for any d.
    for width in (16, 400):
        features = HiddenFourierFeatures(width, 2048, 0.5, rngs=nnx.Rngs(1))
        freqs = np.asarray(features.frequencies.get_value(), np.float64)[0]
        h = np.random.default_rng(0).standard_normal(width)
        h /= np.sqrt(np.mean(h**2))
        assert np.std(freqs @ h) == pytest.approx(0.5, rel=0.06)


# ---------------------------------------------------------------- the factorised layers


@pytest.mark.slow
def test_factorised_model_equals_the_concatenated_formula():
    """Mean-pool encoder and standard decoder recomputed in NumPy from [γ(x); u] and [γ(x); z]."""
    model = model_for(SMALL, 8, seed=5)
    p = params_of(model)
    freqs = np.asarray(model.encoder.coordinate_features.frequencies.get_value())
    x, u = field_batch(8)
    x_np, u_np = np.asarray(x, np.float64), np.asarray(u, np.float64)
    gamma = np_gamma(x_np, freqs)  # (P, F)

    def mlp(h, prefix, n_layers):
        for i in range(n_layers):
            h = np_gelu(h @ p[(*prefix, "layers", str(i), "kernel")] + p[(*prefix, "layers", str(i), "bias")])
        return h

    enc_w = np.concatenate([p[("encoder", "first", "coordinate_kernel")], p[("encoder", "first", "input_kernel")]])
    points = np.concatenate([np.broadcast_to(gamma, (2, *gamma.shape)), u_np[..., None]], axis=-1)
    h = mlp(np_gelu(points @ enc_w + p[("encoder", "first", "bias")]), ("encoder", "hidden"), 1)
    z = h.mean(axis=1) @ p[("encoder", "to_latent", "kernel")] + p[("encoder", "to_latent", "bias")]

    dec_w = np.concatenate([p[("decoder", "first", "coordinate_kernel")], p[("decoder", "first", "input_kernel")]])
    joint = np.concatenate(
        [np.broadcast_to(gamma, (2, *gamma.shape)), np.broadcast_to(z[:, None], (2, len(gamma), z.shape[1]))],
        axis=-1,
    )
    h = mlp(np_gelu(joint @ dec_w + p[("decoder", "first", "bias")]), ("decoder", "hidden"), 2)
    u_hat = (h @ p[("decoder", "readout", "kernel")] + p[("decoder", "readout", "bias")])[..., 0]

    got_u_hat, got_z = run(model, x, u, x)
    np.testing.assert_allclose(np.asarray(got_z), z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got_u_hat), u_hat, rtol=1e-4, atol=1e-5)


def test_factorised_first_layer_is_initialised_as_one_layer_on_the_concatenation():
    """Lecun-normal over the joint fan-in 64 + 32 = 96, not over each block's own fan-in."""
    first = model_for(REFERENCE, 64).decoder.first
    blocks = [np.asarray(first.coordinate_kernel.get_value()), np.asarray(first.input_kernel.get_value())]
    assert [b.shape for b in blocks] == [(32, 100), (64, 100)]
    for block in blocks:
        assert abs(block.std() * np.sqrt(96) - 1) < 0.1


@pytest.mark.slow
def test_shared_and_per_sample_decoder_grids_agree():
    model = model_for(SMALL, 8, seed=6)
    x, u = field_batch(8)
    z = encode(model, x, u)
    np.testing.assert_allclose(np.asarray(decode(model, z, x)),
                               np.asarray(decode(model, z, jnp.broadcast_to(x, (2, *x.shape)))), atol=1e-6)
    np.testing.assert_allclose(np.asarray(z), np.asarray(encode(model, jnp.broadcast_to(x, (2, *x.shape)), u)),
                               atol=1e-6)


# ---------------------------------------------------------------- periodicity


@pytest.mark.slow
@pytest.mark.parametrize("decoder_type, rff_location", [("standard", "penultimate"), ("rff_output", "both")])
def test_periodic_features_make_a_periodic_decoder(decoder_type, rff_location):
    cfg = dataclasses.replace(SMALL, decoder_type=decoder_type, rff_location=rff_location,
                              rff_multiscale_sigmas=(1.0, 3.0))
    x = jnp.asarray(grid_coordinates(16))
    z = jax.random.normal(jax.random.key(0), (2, SMALL.latent_dim))
    deviation = {}
    for kind in ("periodic", "gaussian"):
        model = model_for(dataclasses.replace(cfg, coordinate_features=kind), 16, seed=1)
        base = np.asarray(decode(model, z, x))
        scale = np.abs(base - base.mean()).max()
        deviation[kind] = max(
            np.abs(np.asarray(decode(model, z, x + jnp.asarray([shift], jnp.float32))) - base).max() / scale
            for shift in ([1.0, 0.0], [0.0, 1.0])
        )
    assert deviation["periodic"] < 1e-5
    assert deviation["gaussian"] > 1e-2


# ---------------------------------------------------------------- training state


@pytest.mark.slow
def test_fourier_matrices_are_frozen_by_a_gradient_step():
    cfg = dataclasses.replace(SMALL, decoder_type="rff_output", rff_location="both", coordinate_features="periodic")
    model = model_for(cfg, 8)
    graphdef, params, fixed = nnx.split(model, nnx.Param, ...)
    x, u = field_batch(8)

    def loss(params):
        u_hat, _ = nnx.merge(graphdef, params, fixed)(x, u, x)
        return jnp.mean((u_hat - u) ** 2)

    loss_and_grad = jax.jit(jax.value_and_grad(loss))
    before_step, grads = loss_and_grad(params)
    new_params = jax.tree.map(lambda a, g: a - 0.1 * g, params, grads)
    _, _, fixed_after = nnx.split(nnx.merge(graphdef, new_params, fixed), nnx.Param, ...)
    before, after = jax.tree.leaves(fixed), jax.tree.leaves(fixed_after)
    assert len(before) == 3  # γ of the encoder, coordinate RFF and penultimate RFF of the decoder
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new_params), strict=True)]
    assert all(changed)
    assert float(loss_and_grad(new_params)[0]) < float(before_step)


# ---------------------------------------------------------------- symmetries of the encoder


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "attention", "augmented_residual"])
def test_pooling_is_permutation_invariant_and_blind_to_repeated_points(pooling):
    model = model_for(dataclasses.replace(SMALL, pooling_type=pooling), 8, seed=2)
    x, u = field_batch(8)
    xb = jnp.broadcast_to(x, (2, *x.shape))
    z = np.asarray(encode(model, xb, u))
    perm = np.random.default_rng(0).permutation(x.shape[0])
    np.testing.assert_allclose(np.asarray(encode(model, xb[:, perm], u[:, perm])), z, rtol=1e-5, atol=1e-6)
    twice = np.repeat(np.arange(x.shape[0]), 2)
    np.testing.assert_allclose(np.asarray(encode(model, xb[:, twice], u[:, twice])), z, rtol=1e-5, atol=1e-6)
    # and it is not blind to the data: a different field gives a different code
    assert np.abs(np.asarray(encode(model, xb, u[::-1])) - z).max() > 1e-3


@pytest.mark.slow
def test_mean_pool_encoder_is_resolution_invariant_on_smooth_fields():
    """Mean pooling is a Riemann sum of ∫ MLP(γ(x), u(x)) dx: for a smooth periodic integrand
    the 32² and 64² grids agree to many digits; the decoder then evaluates anywhere."""
    cfg = dataclasses.replace(SMALL, coordinate_features="periodic", coordinate_sigma=1.0)
    model = model_for(cfg, 64, seed=3)
    x32, u32 = field_batch(32)
    x64, u64 = field_batch(64)
    z32, z64 = np.asarray(encode(model, x32, u32)), np.asarray(encode(model, x64, u64))
    np.testing.assert_allclose(z32, z64, rtol=1e-4, atol=1e-5)
    coarse = np.asarray(encode(model, x32[::4], u32[:, ::4]))  # every 4th column: a cruder sum
    assert np.abs(coarse - z64).max() > np.abs(z32 - z64).max()
    u_hat, z = run(model, x32, u32, x64)
    assert u_hat.shape == (2, 64 * 64) and z.shape == (2, cfg.latent_dim)
    assert np.isfinite(np.asarray(u_hat)).all()


# ---------------------------------------------------------------- precision


@pytest.mark.slow
@pytest.mark.parametrize("pooling, decoder_type", [("mean", "standard"), ("augmented_residual", "rff_output")])
def test_bf16_compute_keeps_float32_parameters_and_results(pooling, decoder_type):
    cfg = dataclasses.replace(SMALL, pooling_type=pooling, decoder_type=decoder_type, rff_location="both")
    full = model_for(cfg, 16, seed=4)
    half = model_for(cfg, 16, seed=4, compute_dtype=jnp.bfloat16)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(nnx.state(half, nnx.Param)))
    x, u = field_batch(16)
    u_full, z_full = run(full, x, u, x)
    u_half, z_half = run(half, x, u, x)
    assert u_half.dtype == jnp.float32 and z_half.dtype == jnp.float32
    for a, b in ((u_half, u_full), (z_half, z_full)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        relative = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert 0 < relative < 1e-2  # > 0: the bf16 path really ran in bf16


# ---------------------------------------------------------------- bad settings


@pytest.mark.parametrize("change, flag", [
    ({"decoder_type": "rff_output", "rff_dim": 7}, "--rff-dim"),
    ({"pooling_type": "attention", "n_heads": 5}, "--n-heads"),
    ({"pooling_type": "max"}, "--pooling-type"),
    ({"decoder_hidden": ()}, "--decoder-hidden"),
    ({"coordinate_features": "fourier"}, "coordinate features"),
])
@pytest.mark.slow
def test_bad_model_settings_are_one_line_usage_errors(change, flag):
    with pytest.raises(UsageError, match=flag) as info:
        build_model(dataclasses.replace(SMALL, **change), 16)
    assert "\n" not in str(info.value)
