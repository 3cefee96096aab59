"""The fused attention-pooling encoder (fae_lab.models.fused_attention), in Pallas' interpreter.

Checked against the XLA path of the same model (AttentionPool / AugmentedResidualPool on
embed_points) and, for values, against a float64 NumPy computation written here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fae_lab.config import ModelConfig
from fae_lab.models import build_model, fused, fused_attention
from tests.train_helpers import assert_fused_run_follows_xla, write_tiny_data

# 16 columns = one padded tile width; 12 hidden + 4 heads of 3 exercise width and head padding.
WIDTH, HEADS = 12, 4


def _model_pair(pooling, seed=3):
    cfg = ModelConfig(encoder_hidden=(WIDTH, WIDTH, WIDTH), decoder_hidden=(16, 16), latent_dim=6,
                      n_coordinate_frequencies=5, pooling_type=pooling, n_heads=HEADS)
    return build_model(cfg, 16, seed=seed), build_model(cfg, 16, seed=seed, fused_encoder=True), cfg


def _encoder_value_and_grads(model, x, u, cotangent):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p, rest).encode(x, u) * cotangent)

    value, grads = jax.value_and_grad(loss)(params)
    z = nnx.merge(graphdef, params, rest).encode(x, u)
    return z, value, {k: np.asarray(v.get_value()) for k, v in grads.flat_state() if k[0] == "encoder"}


@pytest.mark.slow
@pytest.mark.parametrize(("pooling", "shared_points", "n_points"), [
    ("attention", True, 37),             # 37 -> 48 padded rows: 3 one-tile chunks a sample
    ("attention", False, 64),            # one chunk of 4 tiles a sample (online softmax in a program)
    ("augmented_residual", False, 37),
    ("augmented_residual", True, 64),
])
def test_fused_attention_encoder_matches_xla_in_z_and_every_gradient(pooling, shared_points, n_points):
    """Same seed, so the same parameters: z and the gradient of a random projection of z
    with respect to every encoder parameter agree with the XLA path to 1e-4."""
    rng = np.random.default_rng(n_points + shared_points)
    plain, fused_model, cfg = _model_pair(pooling)
    batch = 3
    x = jnp.asarray(rng.uniform(size=(n_points, 2) if shared_points else (batch, n_points, 2)), jnp.float32)
    u = jnp.asarray(rng.normal(size=(batch, n_points)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(batch, cfg.latent_dim)), jnp.float32)
    z, value, grads = _encoder_value_and_grads(plain, x, u, cotangent)
    fused_z, fused_value, fused_grads = _encoder_value_and_grads(fused_model, x, u, cotangent)
    np.testing.assert_allclose(np.asarray(fused_z), np.asarray(z), rtol=1e-4, atol=1e-5)
    # the projection's sum can cancel: compare at the scale of its terms
    scale = float(np.sum(np.abs(np.asarray(z) * np.asarray(cotangent))))
    assert abs(float(fused_value) - float(value)) <= 1e-4 * scale
    assert grads.keys() == fused_grads.keys()
    names = {"/".join(map(str, k[1:])) for k in grads}
    assert "pool/query" in names or "pool/attention/query" in names
    assert any("key_value" in n for n in names)
    for key, a in grads.items():
        assert np.linalg.norm(a) > 0, key
        np.testing.assert_allclose(fused_grads[key], a, rtol=1e-4, atol=1e-4 * np.abs(a).max(), err_msg=str(key))


def _random_problem(rng, batch=2, n_points=50, n_feat=6, width=WIDTH, heads=HEADS, hidden=1):
    def r(*shape, scale=1.0):
        return jnp.asarray(rng.normal(size=shape, scale=scale), jnp.float32)

    data = (r(batch, n_points, n_feat), r(batch, n_points))
    params = (r(n_feat, width, scale=0.5), r(width, scale=0.1), r(width),
              [r(width, width, scale=width ** -0.5) for _ in range(hidden)], [r(width, scale=0.1) for _ in range(hidden)],
              r(width, 2 * width, scale=width ** -0.5), r(2 * width, scale=0.1), r(heads, width // heads))
    return data, params


def _numpy_attention(features, u, w0, b0, wu, weights, biases, kv, kv_bias, query):
    """float64, written from AttentionPool's docstring: returns (pooled, mean of h)."""
    f64 = [np.asarray(a, np.float64) for a in (features, u, w0, b0, wu, kv, kv_bias, query)]
    features, u, w0, b0, wu, kv, kv_bias, query = f64

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    h = gelu(features @ w0 + b0 + u[..., None] * wu)
    for w, b in zip(weights, biases, strict=True):
        h = gelu(h @ np.asarray(w, np.float64) + np.asarray(b, np.float64))
    width = h.shape[-1]
    heads, head_dim = query.shape
    keys = (h @ kv[:, :width] + kv_bias[:width]).reshape(*h.shape[:2], heads, head_dim)
    values = (h @ kv[:, width:] + kv_bias[width:]).reshape(*h.shape[:2], heads, head_dim)
    logits = np.einsum("bpjd,jd->bjp", keys, query) / np.sqrt(head_dim)
    _numpy_attention.logit_spread = float(np.ptp(logits, axis=-1).max())
    logits -= logits.max(-1, keepdims=True)
    weights_ = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    pooled = np.einsum("bjp,bpjd->bjd", weights_, values).reshape(h.shape[0], width)
    return pooled, h.mean(1)


TILING = fused.Tiling(rows=16, chunk_rows=32, interpret=True)  # 50 points -> 64 rows: 2 chunks of 2 tiles


@pytest.mark.slow
@pytest.mark.parametrize("tiling", [TILING, fused.Tiling(rows=32, chunk_rows=32, interpret=True)])
def test_pooled_and_mean_match_numpy_across_chunks_and_padding(tiling):
    """50 points a sample: 14 padded rows and two programs a sample, merged by log-sum-exp
    (and with the GPU's 32-row tiles: one tile a program)."""
    (features, u), params = _random_problem(np.random.default_rng(1))
    pooled, mean = fused_attention.attention_embedding(features, u, *params, with_mean=True, tiling=tiling)
    alone = fused_attention.attention_embedding(features, u, *params, tiling=tiling)
    want_pooled, want_mean = _numpy_attention(features, u, *params)
    np.testing.assert_allclose(np.asarray(pooled), want_pooled, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(mean), want_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(alone), want_pooled, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_repeating_every_point_leaves_the_pooling_unchanged():
    """Attention and mean pooling are invariant to repeating every point: padded rows (and the
    extra chunks the repeat makes) must not count."""
    (features, u), params = _random_problem(np.random.default_rng(2), n_points=20)
    once = fused_attention.attention_embedding(features, u, *params, with_mean=True, tiling=TILING)
    twice = fused_attention.attention_embedding(jnp.concatenate([features, features], 1), jnp.concatenate([u, u], 1),
                                                *params, with_mean=True, tiling=TILING)
    for a, b in zip(once, twice, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_large_logits_do_not_overflow():
    """A query 300 times larger puts logits in the thousands (exp overflows float32 past 88):
    the online softmax still gives the float64 answer, and finite gradients."""
    (features, u), params = _random_problem(np.random.default_rng(3))
    params = (*params[:-1], params[-1] * 300.0)
    want, _ = _numpy_attention(features, u, *params)
    assert _numpy_attention.logit_spread > 200  # a naive exp(logit) would overflow
    pooled = fused_attention.attention_embedding(features, u, *params, tiling=TILING)
    np.testing.assert_allclose(np.asarray(pooled), want, rtol=1e-3, atol=1e-4)

    def loss(p):
        return jnp.sum(fused_attention.attention_embedding(features, u, *p, tiling=TILING) ** 2)

    grads = jax.grad(loss)(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def _xla_attention(features, u, w0, b0, wu, weights, biases, kv, kv_bias, query):
    def row(v):  # the suite raises on implicit rank promotion
        return v.reshape(1, 1, -1)

    h = jax.nn.gelu(features @ w0 + row(b0) + u[..., None] * row(wu))
    for w, b in zip(weights, biases, strict=True):
        h = jax.nn.gelu(h @ w + row(b))
    heads, head_dim = query.shape
    kv = (h @ kv + row(kv_bias)).reshape(*h.shape[:2], 2, heads, head_dim)
    logits = jnp.einsum("bpjd,jd->bjp", kv[:, :, 0], query) / jnp.sqrt(float(head_dim))
    pooled = jnp.einsum("bjp,bpjd->bjd", jax.nn.softmax(logits, axis=-1), kv[:, :, 1])
    return pooled.reshape(h.shape[0], -1), h.mean(1)


@pytest.mark.slow
def test_vmapped_members_match_each_member_through_xla():
    """Two members' parameters stacked and the fused call vmapped over them (as the trainer
    vmaps a group): each member's values and gradients are its own XLA ones."""
    rng = np.random.default_rng(4)
    (features, u), first = _random_problem(rng, n_points=40)
    _, second = _random_problem(rng, n_points=40)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), first, second)
    cot_pool, cot_mean = (jnp.asarray(rng.normal(size=(2, 2, WIDTH)), jnp.float32) for _ in range(2))

    def member_loss(fn, p, cp, cm):
        pooled, mean = fn(p)
        return jnp.sum(pooled * cp) + jnp.sum(mean * cm)

    def fused_fn(p):
        return fused_attention.attention_embedding(features, u, *p, with_mean=True, tiling=TILING)

    def xla_fn(p):
        return _xla_attention(features, u, *p)

    fused_values, fused_grads = jax.vmap(jax.value_and_grad(lambda p, cp, cm: member_loss(fused_fn, p, cp, cm)))(
        stacked, cot_pool, cot_mean)
    for m, params in enumerate((first, second)):
        value, grads = jax.value_and_grad(lambda p, m=m: member_loss(xla_fn, p, cot_pool[m], cot_mean[m]))(params)
        assert float(fused_values[m]) == pytest.approx(float(value), rel=1e-4)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(fused_grads), strict=True):
            a, b = np.asarray(a), np.asarray(b)[m]
            assert np.linalg.norm(a) > 0
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    assert not np.allclose(np.asarray(fused_values[0]), np.asarray(fused_values[1]))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data") / "tiny.npz", resolution=8)


@pytest.mark.slow
def test_training_with_fused_attention_pooling_follows_the_xla_run(tiny_data, tmp_path):
    """``--kernels pallas --pooling-type attention`` (interpreted) trains the curves of
    ``--kernels xla`` to float32 tolerance, and the store says which kernel ran."""
    assert_fused_run_follows_xla(tiny_data, tmp_path, [
        "--pooling-type", "attention", "--n-heads", "2", "--encoder-hidden", "16,16",
        "--decoder-hidden", "16,16", "--latent-dim", "8", "--encoder-points", "40"])
