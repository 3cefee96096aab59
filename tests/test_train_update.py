"""The training step's update (fae_lab.train.step.apply_update) against Adam written out in
NumPy, leaf by leaf: clipping by the global norm, the moments, the bias correction, the
staircase learning rate, and the freeze at a non-finite step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fae_lab.train.step import TrainState, adam, apply_update

B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.scale_by_adam's defaults


def hyper(learning_rate=1e-2, grad_clip=np.inf):
    f32 = jnp.float32
    return {"learning_rate": jnp.asarray(learning_rate, f32), "lr_decay_rate": jnp.asarray(0.5, f32),
            "lr_decay_steps": jnp.asarray(3.0, f32), "grad_clip": jnp.asarray(grad_clip, f32)}


def tree(rng, scale=1.0):
    """A parameter-like tree of several shapes (matrices, vectors, a scalar row)."""
    return {"decoder": {"kernel": scale * rng.normal(size=(5, 3)), "bias": scale * rng.normal(size=(3,))},
            "encoder": [scale * rng.normal(size=(2, 4)), scale * rng.normal(size=(1,))]}


def as_jax(t):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)


def numpy_adam(params, grads, mu, nu, count, lr, clip):
    """One Adam step per leaf in float64, from moments ``mu, nu`` after ``count`` steps."""
    leaves = jax.tree.leaves(grads)
    norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in leaves))
    scale = min(1.0, clip / norm)
    t = count + 1
    new_mu = jax.tree.map(lambda m, g: B1 * m + (1 - B1) * scale * g, mu, grads)
    new_nu = jax.tree.map(lambda v, g: B2 * v + (1 - B2) * (scale * g) ** 2, nu, grads)
    new_p = jax.tree.map(lambda p, m, v: p - lr * (m / (1 - B1**t)) / (np.sqrt(v / (1 - B2**t)) + EPS),
                         params, new_mu, new_nu)
    return new_p, new_mu, new_nu, norm


@pytest.mark.parametrize("clip", [np.inf, 0.5])
def test_the_update_is_adam_leaf_by_leaf(clip):
    rng = np.random.default_rng(0)
    params, grads, grads0 = tree(rng), tree(rng), tree(rng, 0.3)
    optimizer = adam()
    # a state one step in, so the moments and the count are not the initial ones
    state = TrainState(as_jax(params), optimizer.init(as_jax(params)), jnp.asarray(4, jnp.int32),
                       jnp.asarray(-1, jnp.int32))
    state, _, _ = apply_update(optimizer, state, as_jax(grads0), jnp.asarray(1.0), hyper())
    assert int(state.step) == 5
    mu = jax.tree.map(np.asarray, state.opt_state.mu)
    nu = jax.tree.map(np.asarray, state.opt_state.nu)
    np.testing.assert_allclose(jax.tree.leaves(mu)[0], (1 - B1) * jax.tree.leaves(grads0)[0], rtol=1e-6)

    new, norm, lr = apply_update(optimizer, state, as_jax(grads), jnp.asarray(1.0), hyper(grad_clip=clip))
    want_p, want_mu, want_nu, want_norm = numpy_adam(
        jax.tree.map(np.asarray, state.params), grads, mu, nu, count=1, lr=1e-2 * 0.5 ** (5 // 3), clip=clip)
    assert float(lr) == pytest.approx(1e-2 * 0.5, rel=1e-6)
    assert float(norm) == pytest.approx(want_norm, rel=1e-6)
    assert jax.tree.structure(new.params) == jax.tree.structure(state.params)
    assert jax.tree.structure(new.opt_state) == jax.tree.structure(state.opt_state)
    for got, want in [(new.params, want_p), (new.opt_state.mu, want_mu), (new.opt_state.nu, want_nu)]:
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(np.asarray(g), w, rtol=2e-5, atol=1e-7)
    assert int(new.opt_state.count) == 2
    assert int(new.step) == 6 and int(new.diverged_step) == -1


@pytest.mark.parametrize("bad", ["gradient", "loss", "parameters"])
def test_a_non_finite_step_leaves_the_state_as_it_was_and_records_the_step(bad):
    rng = np.random.default_rng(1)
    params, grads = tree(rng), tree(rng)
    optimizer = adam()
    state = TrainState(as_jax(params), optimizer.init(as_jax(params)), jnp.asarray(7, jnp.int32),
                       jnp.asarray(-1, jnp.int32))
    loss = jnp.asarray(np.nan if bad == "loss" else 1.0)
    if bad == "gradient":
        grads["encoder"][1] = np.array([np.inf])
    # finite loss and gradient, but an infinite learning rate: infinite parameters
    lr = np.inf if bad == "parameters" else 1e-2
    new, _, _ = apply_update(optimizer, state, as_jax(grads), loss, hyper(learning_rate=lr))
    assert int(new.diverged_step) == 8 and int(new.step) == 7
    for got, want in zip(jax.tree.leaves((new.params, new.opt_state)), jax.tree.leaves((state.params, state.opt_state)),
                         strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
