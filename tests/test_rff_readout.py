"""The fused penultimate-RFF readout and the phases' dot algorithm (issue 16).

The decoder's ``__call__`` reads w·φ(h) + c out of the phases t = B h without forming φ; the
reference is the concatenated path ``readout(penultimate(z, x))`` (φ = [cos, sin] written out,
then the nnx.Linear), and NumPy in float64 for the function itself.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fae_lab.config import ModelConfig
from fae_lab.grid import grid_coordinates
from fae_lab.models import build_model
from fae_lab.models import decoder as decoder_module
from fae_lab.models import features as features_module
from fae_lab.models.features import HIGHEST, HiddenFourierFeatures, fourier_readout, phase_algorithm

BASE = ModelConfig(
    pooling_type="mean", decoder_type="rff_output", rff_location="penultimate", latent_dim=6,
    encoder_hidden=(12, 12), decoder_hidden=(10, 10, 10), n_coordinate_frequencies=5, rff_dim=16,
)
ONE_BAND = BASE
FOUR_BANDS = dataclasses.replace(BASE, rff_dim=8, rff_multiscale_sigmas=(0.5, 1.0, 2.0, 4.0))
RESOLUTION = 8


def close(got, want, rtol=1e-5):
    """max |got - want| <= rtol · max |want|, leaf by leaf."""
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= rtol * np.abs(b).max(), (np.abs(a - b).max(), np.abs(b).max())


def decoder_parts(cfg, seed=0):
    return nnx.split(build_model(cfg, RESOLUTION, seed=seed).decoder, nnx.Param, ...)


def inputs(cfg, batch=3):
    x = jnp.asarray(grid_coordinates(RESOLUTION))
    z = jax.random.normal(jax.random.key(7), (batch, cfg.latent_dim))
    target = jax.random.normal(jax.random.key(8), (batch, len(x)))
    return z, x, target


def loss_fn(graphdef, fused):
    def loss(params, rest, z, x, target):
        decoder = nnx.merge(graphdef, params, rest)
        u = decoder(z, x) if fused else decoder.readout(decoder.penultimate(z, x))[..., 0]
        return jnp.mean((u - target) ** 2) + 0.1 * jnp.mean(u**3), u

    return jax.value_and_grad(loss, argnums=(0, 2), has_aux=True)


@pytest.fixture(params=[False, True], ids=["keep", "recompute"])
def recompute(request, monkeypatch):
    """Both ways of the fused readout's derivatives: the decoder as it is (its default keeps cos
    and sin), and the decoder with its readout told to recompute them."""
    if request.param:
        monkeypatch.setattr(decoder_module, "fourier_readout",
                            functools.partial(fourier_readout, recompute=True))
    return request.param


@pytest.mark.parametrize("cfg", [ONE_BAND, FOUR_BANDS], ids=["one_band", "four_bands"])
def test_fused_readout_matches_the_concatenated_path_in_value_and_gradients(cfg, recompute):
    graphdef, params, rest = decoder_parts(cfg)
    z, x, target = inputs(cfg)
    (value, u), grads = jax.jit(loss_fn(graphdef, fused=True))(params, rest, z, x, target)
    (value_ref, u_ref), grads_ref = jax.jit(loss_fn(graphdef, fused=False))(params, rest, z, x, target)
    close(u, u_ref)
    close(value, value_ref)
    close(grads, grads_ref)  # every parameter of the decoder, and z
    # The readout's kernel has a nonzero gradient on both halves (cos and sin) of every band.
    kernel_grad = np.asarray(grads[0]["readout"]["kernel"][...]).reshape(len(cfg.rff_multiscale_sigmas or (1,)), 2, -1)
    assert np.all(np.abs(kernel_grad).max(-1) > 0)


@pytest.mark.parametrize("cfg", [ONE_BAND, FOUR_BANDS], ids=["one_band", "four_bands"])
def test_fused_readout_matches_under_vmap_over_two_members(cfg, recompute):
    members = [decoder_parts(cfg, seed) for seed in (0, 1)]
    graphdef = members[0][0]
    params, rest = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[(p, r) for _, p, r in members])
    z, x, target = inputs(cfg)
    out = {}
    for fused in (True, False):
        step = jax.vmap(loss_fn(graphdef, fused), in_axes=(0, 0, None, None, None))
        out[fused] = jax.jit(step)(params, rest, z, x, target)
    close(out[True], out[False])
    # and each member as it is alone
    for m, (_, p, r) in enumerate(members):
        alone = jax.jit(loss_fn(graphdef, True))(p, r, z, x, target)
        close(jax.tree.map(lambda leaf, m=m: leaf[m], out[True]), alone)


def test_forward_mode_through_the_decoder_matches_the_concatenated_path(recompute):
    """The NTK's matrix-free product takes a JVP of g w.r.t. the decoder's parameters."""
    graphdef, params, rest = decoder_parts(FOUR_BANDS)
    z, x, _ = inputs(FOUR_BANDS)
    direction = jax.tree.map(lambda p: jax.random.normal(jax.random.key(p.size), p.shape), params)

    def g(params, fused):
        decoder = nnx.merge(graphdef, params, rest)
        return decoder(z, x) if fused else decoder.readout(decoder.penultimate(z, x))[..., 0]

    got = jax.jvp(lambda p: g(p, True), (params,), (direction,))
    want = jax.jvp(lambda p: g(p, False), (params,), (direction,))
    close(got, want)


@pytest.mark.parametrize("recompute", [False, True], ids=["keep", "recompute"])
def test_fourier_readout_and_its_derivatives_match_numpy(recompute):
    """u = Σ w_c cos 2πt + w_s sin 2πt and its gradients w.r.t. t, w_c, w_s in float64 NumPy,
    with phases of several cycles (the reduction to [-1/2, 1/2] is exact)."""
    rng = np.random.default_rng(0)
    t = rng.normal(0, 3, (5, 4, 6)).astype(np.float32)  # (points, K, n)
    wc, ws = (rng.normal(size=(4, 6)).astype(np.float32) for _ in range(2))
    g = rng.normal(size=5)
    angle = 2 * np.pi * t.astype(np.float64)
    u = np.sum(wc * np.cos(angle) + ws * np.sin(angle), axis=(-2, -1))
    dt = g[:, None, None] * 2 * np.pi * (-wc * np.sin(angle) + ws * np.cos(angle))
    dwc = np.einsum("p,pkn->kn", g, np.cos(angle))
    dws = np.einsum("p,pkn->kn", g, np.sin(angle))
    readout = functools.partial(fourier_readout, recompute=recompute)
    got_u, pullback = jax.vjp(readout, jnp.asarray(t), jnp.asarray(wc), jnp.asarray(ws))
    close(got_u, u, 1e-5)
    close(pullback(jnp.asarray(g, jnp.float32)), (dt, dwc, dws), 1e-5)
    # forward mode too (the NTK's matrix-free product takes a JVP of the decoder)
    tangents = [rng.normal(size=a.shape).astype(np.float32) for a in (t, wc, ws)]
    _, got_jvp = jax.jvp(readout, (jnp.asarray(t), jnp.asarray(wc), jnp.asarray(ws)),
                         tuple(jnp.asarray(v) for v in tangents))
    want_jvp = (np.sum(dt / g[:, None, None] * tangents[0], axis=(-2, -1))
                + np.sum(np.cos(angle) * tangents[1] + np.sin(angle) * tangents[2], axis=(-2, -1)))
    close(got_jvp, want_jvp, 1e-5)


def test_fused_path_never_forms_the_concatenated_features(recompute):
    """φ is (B, P, 2Kn): neither the forward nor the gradient has a value of that size (the old
    path has the concatenation and its cotangent)."""
    cfg = FOUR_BANDS
    graphdef, params, rest = decoder_parts(cfg)
    z, x, target = inputs(cfg)
    phi_shape = (len(z), len(x), 4 * cfg.rff_dim)

    def shapes(fused):
        jaxpr = jax.make_jaxpr(loss_fn(graphdef, fused))(params, rest, z, x, target)
        found = set()

        def walk(j):
            for eqn in j.eqns:
                found.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
                for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                    walk(sub)

        walk(jaxpr.jaxpr)
        return found

    assert phi_shape in shapes(False)  # the check sees the old path's φ
    assert phi_shape not in shapes(True)


def test_no_gradient_reaches_the_fixed_frequencies():
    graphdef, params, rest = decoder_parts(FOUR_BANDS)
    z, x, _ = inputs(FOUR_BANDS)

    def loss(params, rest):
        return jnp.sum(nnx.merge(graphdef, params, rest)(z, x) ** 2)

    grad_rest = jax.grad(loss, argnums=1)(params, rest)
    frequencies = grad_rest["penultimate_features"]["frequencies"][...]
    assert frequencies.shape == (4, 4, 10) and not np.any(np.asarray(frequencies))


def test_parameter_tree_is_the_readout_over_the_concatenated_features():
    """Same Param tree (paths, shapes) as before the fused readout: the standard decoder's, with
    the readout widened to K·rff_dim inputs; the frequencies are not Params."""
    for cfg, width in ((ONE_BAND, 16), (FOUR_BANDS, 32)):
        _, params, rest = decoder_parts(cfg)
        _, standard, _ = decoder_parts(dataclasses.replace(cfg, decoder_type="standard"))
        shapes = {p: v.get_value().shape for p, v in params.flat_state()}
        expected = {p: v.get_value().shape for p, v in standard.flat_state()}
        expected[("readout", "kernel")] = (width, 1)
        assert shapes == expected
        assert ("penultimate_features", "frequencies") in dict(rest.flat_state())


def test_model_output_is_the_numpy_formula():
    """g = w·[cos 2πB_b h, sin 2πB_b h]_b + c from h_L and the stored parameters, in float64."""
    model = build_model(FOUR_BANDS, RESOLUTION, seed=2).decoder
    z, x, _ = inputs(FOUR_BANDS, batch=2)
    h = np.asarray(model.last_hidden(z, x), np.float64)
    freqs = np.asarray(model.penultimate_features.frequencies[...], np.float64)
    phi = np.concatenate([f(2 * np.pi * h @ b.T) for b in freqs for f in (np.cos, np.sin)], axis=-1)
    want = phi @ np.asarray(model.readout.kernel[...], np.float64)[:, 0] + float(model.readout.bias[...][0])
    close(model(z, x), want, 1e-5)


def has_checkpoint(jaxpr) -> bool:
    text = str(jaxpr)
    return "checkpoint" in text or "remat" in text


def test_the_readout_keeps_cos_and_sin_on_every_backend(monkeypatch):
    """No backend recomputes (keeping was measured faster on the CPU and on an H200,
    benchmarks/RESULTS.md): the readout's default keeps cos and sin, and the decoder's gradient
    takes that default, with no backend-dependent choice in between."""
    assert inspect.signature(fourier_readout).parameters["recompute"].default is False
    t = jnp.ones((3, 2, 4))
    assert has_checkpoint(jax.make_jaxpr(lambda t: fourier_readout(t, t[0], t[0], recompute=True))(t))
    assert not has_checkpoint(jax.make_jaxpr(lambda t: fourier_readout(t, t[0], t[0]))(t))
    # The decoder's value and gradient: no checkpoint as it is; one where its readout recomputes
    # (so the check would see a decoder that asked for recomputing).
    graphdef, params, rest = decoder_parts(FOUR_BANDS)
    z, x, target = inputs(FOUR_BANDS)
    assert not has_checkpoint(jax.make_jaxpr(loss_fn(graphdef, fused=True))(params, rest, z, x, target))
    monkeypatch.setattr(decoder_module, "fourier_readout", functools.partial(fourier_readout, recompute=True))
    assert has_checkpoint(jax.make_jaxpr(loss_fn(graphdef, fused=True))(params, rest, z, x, target))


def test_phase_algorithm_falls_back_to_highest_where_a_preset_does_not_compile(monkeypatch):
    assert phase_algorithm("cpu") == HIGHEST
    assert phase_algorithm() == HIGHEST  # the tests run on the CPU
    monkeypatch.setitem(features_module._PHASE_ALGORITHMS, "cpu", ("TF32_TF32_F32_X3",))
    assert phase_algorithm("cpu") == HIGHEST  # the CPU refuses TF32
    monkeypatch.setitem(features_module._PHASE_ALGORITHMS, "cpu", ("TF32_TF32_F32_X3", "BF16_BF16_F32_X6"))
    assert phase_algorithm("cpu") == "BF16_BF16_F32_X6"  # the first one that compiles
    assert phase_algorithm("no-such-backend") == HIGHEST
    # asked while a decoder is being traced (its phases are), the probe stays out of that trace
    features_module._compiles.cache_clear()
    monkeypatch.setitem(features_module._PHASE_ALGORITHMS, "cpu", ("BF16_BF16_F32_X3",))
    picked = []

    @jax.jit
    def traced(h):
        picked.append(phase_algorithm())
        return jnp.matmul(h, h, precision=picked[-1])

    np.testing.assert_allclose(traced(jnp.eye(4)), np.eye(4))
    assert picked == ["BF16_BF16_F32_X3"]


def test_an_explicit_algorithm_gives_the_phases_to_float32_accuracy():
    """The module's ``algorithm`` reaches the product: HIGHEST and BF16_BF16_F32_X6 (both
    compile on the CPU) give phases within float32 rounding of float64, for |t| of a few cycles."""
    decoder = build_model(FOUR_BANDS, RESOLUTION, seed=0).decoder
    features = decoder.penultimate_features
    h = jax.random.normal(jax.random.key(3), (256, 10))
    exact = np.asarray(h, np.float64) @ np.asarray(features.frequencies[...], np.float64).reshape(-1, 10).T
    assert np.abs(exact).max() > 1.0
    for algorithm in (HIGHEST, "BF16_BF16_F32_X6"):
        features.algorithm = algorithm
        t = np.asarray(features.phases(h)).reshape(256, -1)
        assert np.abs(t - exact).max() < 1e-5


@pytest.mark.slow
def test_bench_rff_tiny_runs_on_the_cpu(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_rff

    rows = bench_rff.main(["--tiny", "--configs", "multiband", "--json", str(tmp_path / "r.jsonl")])
    by_path = {r["path"]: r for r in rows}
    assert set(by_path) == {"concat/highest", "fused/highest", "keep/highest"}
    for path in ("fused/highest", "keep/highest"):
        assert by_path[path]["u_rel_diff"] < 1e-5
        assert by_path[path]["grad_rel_diff"] < 1e-5
        assert by_path[path]["max_phase_error_cycles"] < 1e-5
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3
    with pytest.raises(SystemExit) as exit_info:
        bench_rff.main(["--tiny", "--configs", "nope"])
    assert exit_info.value.code == 2


def test_ntk_matrix_free_product_of_the_rff_decoder_matches_the_dense_kernel(recompute):
    """K v = J (Jᵀ v) (one VJP, one JVP through the fused readout) equals J Jᵀ v with J the
    dense Jacobian of the concatenated path."""
    from fae_lab.ntk.kernel import flatten, make_dense_jacobian, make_ntk_matvec

    graphdef, params, rest = decoder_parts(FOUR_BANDS)
    z, x, _ = inputs(FOUR_BANDS, batch=1)

    def output(fused):
        def g(params, z):
            decoder = nnx.merge(graphdef, params, rest)
            u = decoder(z, x) if fused else decoder.readout(decoder.penultimate(z, x))[..., 0]
            return u[0]

        return flatten(g, params)

    fused_f, theta = output(True)
    concat_f, _ = output(False)
    v = jax.random.normal(jax.random.key(5), (len(x),))
    jac = np.asarray(make_dense_jacobian(concat_f)(theta, z), np.float64)  # (n, p)
    close(make_ntk_matvec(fused_f)(theta, z, v), jac @ (jac.T @ np.asarray(v, np.float64)), 1e-4)



def _round_mantissa(x: np.ndarray, dropped_bits: int) -> np.ndarray:
    """float32 values rounded to nearest with the low ``dropped_bits`` of the 23-bit mantissa
    cleared: 13 gives TF32 (10 bits kept), 16 gives bf16 (7 bits kept)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    half, mask = 1 << (dropped_bits - 1), (0xFFFFFFFF >> dropped_bits) << dropped_bits
    return ((bits + half) & mask).astype(np.uint32).view(np.float32)


def _bf16_product(a: np.ndarray, b: np.ndarray, passes: int) -> np.ndarray:
    """a @ b.T as the dot presets compute it: each operand split into bf16 parts (hi, lo),
    products accumulated exactly. passes 1: hi·hi (``BF16_BF16_F32``); 3: hi·hi + hi·lo + lo·hi
    (``BF16_BF16_F32_X3``)."""
    def split(x):
        hi = _round_mantissa(x, 16)
        return hi.astype(np.float64), _round_mantissa(np.asarray(x, np.float32) - hi, 16).astype(np.float64)

    (a_hi, a_lo), (b_hi, b_lo) = split(a), split(b)
    out = a_hi @ b_hi.T
    return out + a_hi @ b_lo.T + a_lo @ b_hi.T if passes == 3 else out


def test_the_gpu_phase_algorithm_adds_far_less_noise_than_h_carries_from_tf32():
    """The arithmetic behind phase_algorithm()'s GPU pick, emulated in NumPy (the CPU ignores
    bf16 presets and computes in float32): ``BF16_BF16_F32_X3``'s largest phase error against
    float64 is under a tenth of the one that rounding h to TF32 alone causes (the hidden
    layers' products on a GPU), for the seed's widths and bands. Plain bf16 fails the same
    bound, so the check tells the presets apart. (The preset's error on a GPU is measured by
    benchmarks/bench_rff.py.)"""
    assert features_module._PHASE_ALGORITHMS["gpu"][0] == "BF16_BF16_F32_X3"  # what this checks
    d, n_features, sigmas = 100, 64, (0.5, 1.0, 2.0, 4.0)
    h = np.asarray(jax.nn.gelu(jax.random.normal(jax.random.key(5), (4096, d))))
    module = HiddenFourierFeatures(d, n_features, sigmas, rngs=nnx.Rngs(features=0))
    freqs = np.asarray(module.frequencies[...]).reshape(-1, d)
    exact = h.astype(np.float64) @ freqs.astype(np.float64).T
    assert np.abs(exact).max() > 1.0  # phases of more than a cycle, where rounding shows

    from_tf32_h = np.abs(_round_mantissa(h, 13).astype(np.float64) @ freqs.astype(np.float64).T - exact).max()
    assert np.abs(_bf16_product(h, freqs, 3) - exact).max() < 0.1 * from_tf32_h
    assert np.abs(_bf16_product(h, freqs, 1) - exact).max() > 0.1 * from_tf32_h
