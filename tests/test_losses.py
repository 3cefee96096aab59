"""Loss terms against NumPy references (np.roll differences, NumPy FFTs) and closed forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fae_lab.errors import UsageError
from fae_lab.losses import (
    field_loss_terms,
    latent_penalty,
    loss_term_names,
    point_l2,
    requires_full_grid,
)

R = 16


def np_power(e):
    r = e.shape[-1]
    return np.abs(np.fft.fft2(e) / r**2) ** 2


def np_n(r):
    n = np.fft.fftfreq(r) * r
    ny, nx = np.meshgrid(n, n, indexing="ij")
    return nx, ny


def np_fd_gradient(e):
    """mean((δx e)² + (δy e)²), δx e[i, j] = (e[i, j+1] − e[i, j−1]) / 2, periodic."""
    dx = (np.roll(e, -1, axis=2) - np.roll(e, 1, axis=2)) / 2
    dy = (np.roll(e, -1, axis=1) - np.roll(e, 1, axis=1)) / 2
    return np.mean(dx**2 + dy**2)


def np_spectral_gradient(e, k0):
    nx, ny = np_n(e.shape[-1])
    return np.mean(np.sum(np_power(e) * (nx**2 + ny**2) / k0**2, axis=(1, 2)))


def np_fourier(e, p):
    nx, ny = np_n(e.shape[-1])
    w = np.maximum(np.hypot(nx, ny), 1.0) ** p
    return np.mean(np.sum(np_power(e) * w / w.mean(), axis=(1, 2)))


def cosine_mode(r, nx, ny, amplitude=1.0):
    iy, ix = np.meshgrid(np.arange(r), np.arange(r), indexing="ij")
    return amplitude * np.cos(2 * np.pi * (nx * ix + ny * iy) / r)


def fields(seed, b=3, r=R):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(b, r, r))
    return target + rng.normal(size=(b, r, r)), target


def terms_of(pred, target, **kwargs):
    out = field_loss_terms(jnp.asarray(pred), jnp.asarray(target), **kwargs)
    return {k: float(v) for k, v in out.items()}


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["l2", "h1", "fourier_weighted", "combined"])
def test_term_names(loss_type):
    pred, target = fields(0)
    out = field_loss_terms(
        jnp.asarray(pred),
        jnp.asarray(target),
        loss_type=loss_type,
        lambda_grad=0.5,
        freq_weight_power=1.0,
    )
    assert tuple(out) == {"l2": ("l2",), "h1": ("l2", "grad"), "fourier_weighted": ("fourier",),
                          "combined": ("fourier", "grad")}[loss_type]  # docs/run-store.md
    assert loss_term_names(loss_type) == tuple(out)
    assert all(v.shape == () for v in out.values())
    assert requires_full_grid(loss_type) == (loss_type != "l2")


@pytest.mark.slow
def test_l2_and_finite_difference_h1(x64):
    pred, target = fields(1)
    e = pred - target
    out = terms_of(pred, target, loss_type="h1", lambda_grad=0.7, freq_weight_power=3.0)
    assert out["l2"] == pytest.approx(np.mean(e**2), rel=1e-12)
    assert out["grad"] == pytest.approx(0.7 * np_fd_gradient(e), rel=1e-12)
    assert terms_of(pred, target, loss_type="l2", lambda_grad=0.7, freq_weight_power=3.0) == {
        "l2": pytest.approx(np.mean(e**2), rel=1e-12)
    }


@pytest.mark.slow
def test_central_differences_vanish_on_nyquist_but_spectral_form_does_not(x64):
    a, lam = 1.3, 0.5
    for nx, ny in [(R // 2, 0), (0, R // 2), (R // 2, R // 2)]:
        e = cosine_mode(R, nx, ny, a)[None]  # a·(−1)^(ix) etc.: one self-conjugate mode
        zero = np.zeros_like(e)
        fd = terms_of(e, zero, loss_type="h1", lambda_grad=lam, freq_weight_power=1.0)
        spectral = terms_of(
            e, zero, loss_type="h1", lambda_grad=lam, freq_weight_power=1.0, h1_form="spectral"
        )
        assert abs(fd["grad"]) < 1e-20
        # Σ (|n|/k0)² |ê|² with k0 = R/(2π): (2π|n|/R)² a², |n|² = nx² + ny².
        expected = lam * (2 * np.pi / R) ** 2 * (nx**2 + ny**2) * a**2
        assert spectral["grad"] == pytest.approx(expected, rel=1e-12)
        assert spectral["l2"] == pytest.approx(a**2, rel=1e-12)


def test_spectral_h1_against_numpy_fft(x64):
    pred, target = fields(2)
    e = pred - target
    for k0, expected_k0 in [(3.0, 3.0), (None, R / (2 * np.pi))]:
        out = terms_of(
            pred,
            target,
            loss_type="h1",
            lambda_grad=0.25,
            freq_weight_power=1.0,
            h1_form="spectral",
            k0=k0,
        )
        assert out["grad"] == pytest.approx(0.25 * np_spectral_gradient(e, expected_k0), rel=1e-10)


@pytest.mark.slow
def test_spectral_and_finite_difference_agree_on_smooth_fields(x64):
    r = 64
    rng = np.random.default_rng(3)
    e = sum(
        rng.normal() * cosine_mode(r, nx, ny) + rng.normal() * cosine_mode(r, ny, -nx)
        for nx, ny in [(1, 0), (1, 1), (2, 1), (0, 2)]
    )[None]
    zero = np.zeros_like(e)
    kwargs = {"loss_type": "h1", "lambda_grad": 1.0, "freq_weight_power": 1.0}
    fd = terms_of(e, zero, **kwargs)["grad"]
    spectral = terms_of(e, zero, h1_form="spectral", **kwargs)["grad"]
    # sin x < x: the difference quotient underestimates, by about x²/3 < 2% at |n| <= √5, R = 64.
    assert fd < spectral
    assert spectral == pytest.approx(fd, rel=0.03)


def test_fourier_weighted_against_numpy_fft(x64):
    pred, target = fields(4)
    e = pred - target
    for p in [0.5, 1.0, 2.0]:
        out = terms_of(
            pred, target, loss_type="fourier_weighted", lambda_grad=9.0, freq_weight_power=p
        )
        assert out["fourier"] == pytest.approx(np_fourier(e, p), rel=1e-10)


def test_fourier_power_zero_is_l2(x64):
    pred, target = fields(5)
    out = terms_of(
        pred, target, loss_type="fourier_weighted", lambda_grad=0.0, freq_weight_power=0.0
    )
    assert out["fourier"] == pytest.approx(np.mean((pred - target) ** 2), rel=1e-12)


def test_higher_power_weights_high_frequencies_more(x64):
    # One cosine mode of amplitude a costs w_n a²/2, so the high/low ratio is (|n_hi|/|n_lo|)^p.
    low, high = cosine_mode(R, 2, 0)[None], cosine_mode(R, 0, 6)[None]
    zero = np.zeros_like(low)
    ratios = []
    for p in [0.0, 1.0, 2.0]:
        kwargs = {"loss_type": "fourier_weighted", "lambda_grad": 0.0, "freq_weight_power": p}
        ratio = terms_of(high, zero, **kwargs)["fourier"] / terms_of(low, zero, **kwargs)["fourier"]
        assert ratio == pytest.approx(3.0**p, rel=1e-10)
        ratios.append(ratio)
    assert ratios[0] < ratios[1] < ratios[2]


@pytest.mark.parametrize("h1_form", ["finite_difference", "spectral"])
def test_combined_is_fourier_plus_gradient(x64, h1_form):
    pred, target = fields(6)
    e = pred - target
    out = terms_of(
        pred, target, loss_type="combined", lambda_grad=0.3, freq_weight_power=0.5, h1_form=h1_form
    )
    gradient = (
        np_fd_gradient(e)
        if h1_form == "finite_difference"
        else np_spectral_gradient(e, R / (2 * np.pi))
    )
    assert out["fourier"] == pytest.approx(np_fourier(e, 0.5), rel=1e-10)
    assert out["grad"] == pytest.approx(0.3 * gradient, rel=1e-10)


def test_float32_close_to_float64_reference():
    pred, target = (x.astype(np.float32) for x in fields(7))
    e = (pred - target).astype(np.float64)
    out = field_loss_terms(
        jnp.asarray(pred),
        jnp.asarray(target),
        loss_type="combined",
        lambda_grad=0.3,
        freq_weight_power=1.5,
    )
    assert all(v.dtype == jnp.float32 for v in out.values())
    assert float(out["fourier"]) == pytest.approx(np_fourier(e, 1.5), rel=1e-5)
    assert float(out["grad"]) == pytest.approx(0.3 * np_fd_gradient(e), rel=1e-5)


def test_point_l2_and_latent_penalty(x64):
    rng = np.random.default_rng(8)
    pred, target, z = rng.normal(size=(4, 50)), rng.normal(size=(4, 50)), rng.normal(size=(4, 8))
    assert float(point_l2(jnp.asarray(pred), jnp.asarray(target))) == pytest.approx(
        np.mean((pred - target) ** 2), rel=1e-12
    )
    assert float(latent_penalty(jnp.asarray(z), 1e-3)) == pytest.approx(
        1e-3 * np.mean(np.sum(z**2, axis=1)), rel=1e-12
    )


@pytest.mark.parametrize("h1_form", ["finite_difference", "spectral"])
def test_jit_and_vmap_over_hyperparameters(h1_form):
    pred, target = (jnp.asarray(x, jnp.float32) for x in fields(9))
    e = np.asarray(pred - target, np.float64)
    loss = jax.jit(functools.partial(field_loss_terms, loss_type="combined", h1_form=h1_form))
    lambdas = jnp.array([0.0, 0.3, 1.0])
    powers = jnp.array([0.0, 1.0, 2.0])
    swept = jax.vmap(lambda lam, p: loss(pred, target, lambda_grad=lam, freq_weight_power=p))(
        lambdas, powers
    )
    gradient = (
        np_fd_gradient(e)
        if h1_form == "finite_difference"
        else np_spectral_gradient(e, R / (2 * np.pi))
    )
    for i, (lam, p) in enumerate(zip(lambdas.tolist(), powers.tolist(), strict=True)):
        assert float(swept["fourier"][i]) == pytest.approx(np_fourier(e, p), rel=1e-5)
        assert float(swept["grad"][i]) == pytest.approx(lam * gradient, rel=1e-5, abs=1e-7)
    beta_sweep = jax.vmap(latent_penalty, in_axes=(None, 0))(
        jnp.ones((2, 3)), jnp.array([1.0, 2.0])
    )
    np.testing.assert_allclose(beta_sweep, [3.0, 6.0])


@pytest.mark.parametrize(
    ("loss_type", "h1_form"),
    [
        ("l2", "finite_difference"),
        ("h1", "finite_difference"),
        ("h1", "spectral"),
        ("fourier_weighted", "finite_difference"),
        ("combined", "spectral"),
    ],
)
def test_gradients_are_finite(loss_type, h1_form):
    pred, target = (jnp.asarray(x, jnp.float32) for x in fields(10))

    def total(pred, lam, p, k0):
        terms = field_loss_terms(
            pred,
            target,
            loss_type=loss_type,
            lambda_grad=lam,
            freq_weight_power=p,
            h1_form=h1_form,
            k0=k0,
        )
        return sum(terms.values())

    grads = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))(pred, 0.5, 1.0, 2.5)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    if loss_type == "l2":  # d mean(e²)/d pred = 2e / (B R²)
        np.testing.assert_allclose(grads[0], 2 * (pred - target) / pred.size, rtol=1e-5, atol=1e-9)
    if loss_type == "h1" and h1_form == "finite_difference":  # d(l2 + λG)/dλ = G
        e = np.asarray(pred - target, np.float64)
        assert float(grads[1]) == pytest.approx(np_fd_gradient(e), rel=1e-5)


def test_bad_choices_are_usage_errors():
    pred = jnp.zeros((1, 4, 4))
    with pytest.raises(UsageError, match="--loss-type"):
        field_loss_terms(pred, pred, loss_type="h2", lambda_grad=1.0, freq_weight_power=1.0)
    with pytest.raises(UsageError, match="--h1-form"):
        field_loss_terms(
            pred, pred, loss_type="h1", lambda_grad=1.0, freq_weight_power=1.0, h1_form="fft"
        )
    with pytest.raises(UsageError, match="--loss-type"):
        loss_term_names("sobolev")
