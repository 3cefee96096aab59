"""The fused decoder (fae_lab.models.fused_decoder) around its Mosaic GPU kernel.

The kernel runs only on a Hopper GPU: JAX's Mosaic GPU interpreter cannot run it, and
benchmarks/check_fused_decoder.py checks it there against float64 and XLA. Here its CPU
stand-in (the same padded operands and arithmetic in jnp) is checked against a float64 NumPy
decoder written out independently, and everything around the kernel is checked as the model,
the training step and a group's evaluation use it: padding, TF32 rounding, what the training
forward keeps and the gradient XLA's backward takes from it, the parameters read from the model,
a group's members in one launch, and when it is chosen.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fae_lab.config import ModelConfig, RunConfig
from fae_lab.errors import UsageError
from fae_lab.grid import grid_coordinates
from fae_lab.models import fused_decoder
from fae_lab.models.fae import build_model
from fae_lab.spectral import radial_bins, resolve_cutoff
from fae_lab.train.evaluate import SplitEvalData, prepare_eval_data
from fae_lab.train.run import group_programs, use_fused_decoder
from fae_lab.train.step import StepStatics, stack_members

R = 8  # 64 points per sample: one tile


def numpy_decoder(c, z, w, b, w_out):
    """u[s, p] = w_out · h_L in float64, one sample and one point at a time."""
    c, z, w, b, w_out = (np.asarray(a, np.float64) for a in (c, z, w, b, w_out))

    def gelu(x):
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))

    u = np.empty((z.shape[0], c.shape[0]))
    for s in range(z.shape[0]):
        h = gelu(c + z[s])
        for layer in range(w.shape[0]):
            h = gelu(h @ w[layer] + b[layer])
        u[s] = h @ w_out
    return u.reshape(-1)


def random_decoder(seed, samples, points, width, layers):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(points, width)), jnp.float32),
            jnp.asarray(rng.normal(size=(samples, width)) * 0.5, jnp.float32),
            jnp.asarray(rng.normal(size=(layers, width, width)) * 1.6 / np.sqrt(width), jnp.float32),
            jnp.asarray(rng.normal(size=(layers, width)) * 0.1, jnp.float32),
            jnp.asarray(rng.normal(size=(width,)) / np.sqrt(width), jnp.float32))


@pytest.mark.parametrize(("samples", "points", "width", "layers"),
                         [(3, 128, 100, 4), (2, 64, 64, 2), (1, 192, 128, 2)])
def test_the_stand_in_computes_the_decoder_on_padded_operands(samples, points, width, layers):
    args = random_decoder(samples + width, samples, points, width, layers)
    u = fused_decoder.decode(*args, kernels=False)
    want = numpy_decoder(*args)
    assert u.shape == (samples * points,)
    np.testing.assert_allclose(np.asarray(u, np.float64), want, rtol=0, atol=2e-5 * np.max(np.abs(want)))
    # the padded operands the kernel gets: zeros beyond the model's width
    wide = fused_decoder._widen(*args)
    shapes = [(points, 128), (samples, 128), (layers, 128, 128), (layers, 128), (128,)]
    for padded, original, shape in zip(wide, args, shapes, strict=True):
        assert padded.shape == shape
        np.testing.assert_array_equal(np.asarray(padded)[tuple(slice(0, n) for n in original.shape)], original)
        assert np.sum(np.abs(np.asarray(padded))) == pytest.approx(float(np.sum(np.abs(np.asarray(original)))), rel=1e-6)


def numpy_kept(c, z, w, b):
    """h_l and GELU'(a_l) for every layer l = 0 .. L, (S·P, H) each, in float64 NumPy: what the
    training forward keeps for the backward pass."""
    c, z, w, b = (np.asarray(a, np.float64) for a in (c, z, w, b))
    k = np.sqrt(2.0 / np.pi)
    a = (c[None] + z[:, None]).reshape(-1, c.shape[1])
    hs, slopes = [], []
    for layer in range(w.shape[0] + 1):
        if layer:
            a = hs[-1] @ w[layer - 1] + b[layer - 1]
        t = np.tanh(k * (a + 0.044715 * a ** 3))
        hs.append(0.5 * a * (1.0 + t))
        slopes.append(0.5 * (1.0 + t) + 0.5 * a * (1.0 - t ** 2) * k * (1.0 + 3 * 0.044715 * a ** 2))
    return hs, slopes


def numpy_tf32(x):
    """x rounded to the nearest TF32 value (ties away from zero), on its float32 bits."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return (((bits + 0x1000) & 0xFFFFE000) & 0xFFFFFFFF).astype(np.uint32).view(np.float32)


def numpy_slope_code(slope):
    """GELU'(a) as the kept arrays carry it: the nearest of 4,096 evenly spaced values."""
    low, high, codes = fused_decoder.SLOPE_LOW, fused_decoder.SLOPE_HIGH, fused_decoder.SLOPE_CODES
    step = (high - low) / codes
    return np.round((np.asarray(slope, np.float64) - low) / step) * step + low


SLOPE_STEP = (fused_decoder.SLOPE_HIGH - fused_decoder.SLOPE_LOW) / fused_decoder.SLOPE_CODES


def test_a_packed_value_is_its_activation_to_any_tf32_product():
    """The 13 low bits a TF32 product drops carry the slope: rounding the packed value to TF32
    (as XLA's products do) or truncating it (as the tensor cores do) gives exactly the
    activation rounded to TF32, and the slope comes back to within half a code's step."""
    rng = np.random.default_rng(5)
    h = np.concatenate([rng.normal(size=4000) * 3, -rng.uniform(0, 0.17, 1000), [0.0, -0.0, 1.0, 2.0 ** -20]])
    h = h.astype(np.float32)
    a = np.linspace(-8, 8, h.size)
    t = np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3))
    slope = 0.5 * (1 + t) + 0.5 * np.sqrt(2 / np.pi) * a * (1 - t ** 2) * (1 + 3 * 0.044715 * a ** 2)
    packed = np.asarray(fused_decoder.pack(jnp.asarray(h), jnp.asarray(slope, jnp.float32)))
    bits = packed.view(np.uint32)
    assert np.all((bits & 0x1FFF) < 0x1000)  # the code stays below the rounding's half step
    want = numpy_tf32(h)
    np.testing.assert_array_equal(numpy_tf32(packed), want)
    np.testing.assert_array_equal((bits & 0xFFFFE000).view(np.float32), want)
    np.testing.assert_array_equal(np.asarray(fused_decoder.unpack_activation(jnp.asarray(packed))), want)
    back = np.asarray(fused_decoder.unpack_slope(jnp.asarray(packed)), np.float64)
    assert np.max(np.abs(back - slope)) <= SLOPE_STEP / 2 + 1e-6


def test_the_training_forward_keeps_each_layer_s_activation_with_its_slope_padded():
    samples, points, width, layers = 2, 64, 100, 4
    args = random_decoder(11, samples, points, width, layers)
    c_, z_, w_t, b_, wo_ = fused_decoder._padded_operands(*args)
    u, *kept = fused_decoder._forward_in_jnp(c_[None], z_[None], w_t[None], b_[None], wo_[None], keep=True)
    hs, slopes = numpy_kept(*args[:4])
    assert len(kept) == layers + 1 and all(k.shape == (samples * points, 128) for k in kept)
    np.testing.assert_allclose(np.asarray(u, np.float64), numpy_decoder(*args), rtol=0, atol=2e-5)
    for got, h, slope in zip(kept, hs, slopes, strict=True):
        activation = np.asarray(fused_decoder.unpack_activation(got), np.float64)
        np.testing.assert_allclose(activation[:, :width], h, rtol=2.0 ** -11, atol=2e-5 * max(1.0, np.max(np.abs(h))))
        back = np.asarray(fused_decoder.unpack_slope(got), np.float64)
        np.testing.assert_allclose(back[:, :width], slope, rtol=0, atol=SLOPE_STEP / 2 + 2e-5)
        # padded units: h = GELU(0) = 0 exactly, and GELU'(0) = 1/2 (the backward reads
        # only the model's columns of it); the last one, the bias gradient's unit, GELU(1)
        free, bias_unit = slice(width, fused_decoder.BIAS_COLUMN), fused_decoder.BIAS_COLUMN
        assert not np.any(activation[:, free])
        np.testing.assert_allclose(back[:, free], 0.5, rtol=0, atol=SLOPE_STEP / 2)
        gelu_1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
        np.testing.assert_allclose(activation[:, bias_unit], gelu_1, rtol=2.0 ** -10)
        assert np.ptp(activation[:, bias_unit]) == 0  # one constant down the column


def numpy_gradient(c, z, w, b, w_out, cot):
    """The decoder's gradient in float64 NumPy from what the training forward keeps (each h_l
    rounded to TF32, each GELU'(a_l) to its code): δa_l = δh_l ⊙ GELU'(a_l), ∂W_l =
    h_{l-1}ᵀ δa_l, ∂b_l = Σ δa_l, δh_{l-1} = δa_l W_lᵀ, from δh_L = cot w_outᵀ."""
    hs, slopes = numpy_kept(c, z, w, b)
    hs = [numpy_tf32(h).astype(np.float64) for h in hs]
    slopes = [numpy_slope_code(s) for s in slopes]
    w, w_out, cot = (np.asarray(a, np.float64) for a in (w, w_out, cot))
    grad = cot[:, None] * w_out[None]
    d_w, d_b = [], []
    for layer in reversed(range(w.shape[0])):
        delta = grad * slopes[layer + 1]
        d_w.insert(0, hs[layer].T @ delta)
        d_b.insert(0, delta.sum(0))
        grad = delta @ w[layer].T
    delta = (grad * slopes[0]).reshape(z.shape[0], c.shape[0], -1)
    return delta.sum(0), delta.sum(1), np.stack(d_w), np.stack(d_b), hs[-1].T @ cot


@pytest.mark.parametrize("chain", ["kernel", "xla"])  # the backward's chain: the kernel's stand-in, or XLA's
# 139 x 64 points: XLA's forward and backward (no kernel); 128 wide: no padded unit for ∂b
@pytest.mark.parametrize(("samples", "width"), [(2, 100), (2, 128), (139, 16)])
def test_its_gradient_is_the_decoder_s(samples, width, chain, monkeypatch):
    """Reverse mode through the kept arrays and XLA's backward products: the gradient a float64
    NumPy backward computes from the same kept values (activations in TF32, slopes as codes),
    within that rounding of the reference's, and the decoder's (a finite difference). Where
    the kernel does not run, XLA's own gradient exactly."""
    monkeypatch.setattr(fused_decoder, "BACKWARD", chain)
    args = random_decoder(1, samples, 64, width, 4)
    cot = jnp.asarray(np.random.default_rng(2).normal(size=samples * 64), jnp.float32)
    argnums = (0, 1, 2, 3, 4)
    got = jax.grad(lambda *a: jnp.sum(fused_decoder.decode(*a, kernels=False) * cot), argnums)(*args)
    want = jax.grad(lambda *a: jnp.sum(fused_decoder.reference(*a) * cot), argnums)(*args)
    kept = numpy_gradient(*args, cot) if samples == 2 else want
    for g, w_, k in zip(got, want, kept, strict=True):
        assert g.shape == w_.shape
        scale = float(jnp.max(jnp.abs(w_)))
        # (float32 against float64: a few values land on the other side of a TF32 or code step)
        np.testing.assert_allclose(np.asarray(g), np.asarray(k), rtol=0, atol=1e-4 * scale)
        # the kept values' rounding moves the gradient by well under a percent of its scale
        np.testing.assert_allclose(np.asarray(g), np.asarray(w_), rtol=0, atol=(2e-3 if samples == 2 else 1e-5) * scale)
    eps = 1e-2
    bumped = args[2].at[1, 3, 5].add(eps)
    slope = (jnp.sum(fused_decoder.reference(args[0], args[1], bumped, *args[3:]) * cot)
             - jnp.sum(fused_decoder.reference(*args) * cot)) / eps
    np.testing.assert_allclose(float(slope), float(got[2][1, 3, 5]), rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("chain", ["kernel", "xla"])
@pytest.mark.parametrize("samples", [2, 139])  # 139 x 64 points: XLA's layers
def test_the_last_hidden_layer_alone_is_the_decoder_s_with_the_same_backward(samples, chain, monkeypatch):
    """last_hidden (for a readout that is not w·h_L): h_L exactly as the reference computes it
    (not rounded to TF32: the RFF phases need it whole); its pullback of G = du ⊗ w_out is
    decode's pullback of du, bit for bit (the same backward from the same kept arrays), and of
    any G the reference's within the kept values' rounding."""
    monkeypatch.setattr(fused_decoder, "BACKWARD", chain)
    width = 100 if samples == 2 else 16
    *args, w_out = random_decoder(5, samples, 64, width, 2)
    h, pullback = jax.vjp(lambda *a: fused_decoder.last_hidden(*a, kernels=False), *args)
    want, want_pullback = jax.vjp(fused_decoder.reference_hidden, *args)
    assert h.shape == (samples * 64, width)
    np.testing.assert_allclose(np.asarray(h), np.asarray(want), rtol=1e-5, atol=1e-5)  # padded sums
    du = jnp.asarray(np.random.default_rng(6).normal(size=samples * 64), jnp.float32)
    _, decode_pullback = jax.vjp(lambda *a: fused_decoder.decode(*a, kernels=False), *args, w_out)
    for got, via_decode in zip(pullback(du[:, None] * w_out[None, :]), decode_pullback(du), strict=False):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(via_decode))
    cot = jnp.asarray(np.random.default_rng(7).normal(size=h.shape), jnp.float32)
    for got, w_ in zip(pullback(cot), want_pullback(cot), strict=True):
        scale = float(jnp.max(jnp.abs(w_)))
        np.testing.assert_allclose(np.asarray(got), np.asarray(w_), rtol=0, atol=(2e-3 if samples == 2 else 1e-5) * scale)


def test_a_group_s_members_run_in_one_launch_with_their_own_parameters(monkeypatch):
    """Under vmap the kernel (here its stand-in) is called on every member's operands at once;
    each member's value and gradient are that member's alone, the coordinate term shared or not."""
    calls = []

    def kernel(c, z, w_t, b, w_out, keep=False, readout=True):
        calls.append((c.shape[0], keep))
        return fused_decoder._forward_in_jnp(c, z, w_t, b, w_out, keep=keep, readout=readout)

    def backward(kept, seed, w, w_out):
        calls.append((w.shape[0], "backward"))
        return fused_decoder._backward_in_jnp(kept, seed, w, w_out)

    monkeypatch.setattr(fused_decoder, "_forward_kernel", kernel)
    monkeypatch.setattr(fused_decoder, "_backward_kernel", backward)
    members = [random_decoder(20 + m, 2, 64, 32, 2) for m in range(3)]
    stacked = [jnp.stack(a) for a in zip(*members, strict=True)]
    cot = jnp.asarray(np.random.default_rng(4).normal(size=(3, 128)), jnp.float32)

    def value_and_grad(fn):
        def one(cot, *a):
            u, pullback = jax.vjp(fn, *a)
            return u, pullback(cot)
        return one

    for shared in (False, True):
        args = [stacked[0][0] if shared else stacked[0], *stacked[1:]]
        in_axes = (0, None if shared else 0, 0, 0, 0, 0)
        calls.clear()
        u, grads = jax.vmap(value_and_grad(lambda *a: fused_decoder.decode(*a)), in_axes)(cot, *args)
        # the rule calls the kernel once for all three members (JAX also traces the function
        # for one member, to know its output's shapes)
        assert (3, True) in calls and (3, "backward") in calls
        assert set(calls) <= {(1, True), (3, True), (1, "backward"), (3, "backward")}
        for m in range(3):
            own = [members[0][0] if shared else members[m][0], *members[m][1:]]
            u_m, g_m = value_and_grad(fused_decoder.reference)(cot[m], *own)
            np.testing.assert_allclose(np.asarray(u[m]), np.asarray(u_m), rtol=0, atol=5e-3 * float(jnp.max(jnp.abs(u_m))))
            for g, want in zip(grads, g_m, strict=True):  # each member's own cotangents
                np.testing.assert_allclose(np.asarray(g[m]), np.asarray(want), rtol=0,
                                           atol=5e-3 * float(jnp.max(jnp.abs(want))))
        calls.clear()
        values = jax.vmap(lambda *a: fused_decoder.decode(*a), in_axes[1:])(*args)  # value only
        assert calls[-1] == (3, False) and set(calls) <= {(1, False), (3, False)}
        assert values.shape == (3, 128)


@pytest.mark.parametrize("kernel", ["value", "keep", "hidden", "backward_du", "backward_grad"])
def test_the_kernels_trace_and_lower_for_a_gpu_on_this_machine(kernel):
    """The CPU cannot run the Mosaic GPU kernels, but it can trace them and lower them for
    CUDA: the kernel bodies' Python (layouts, barriers, shapes) runs here, and the outputs have
    the shapes their callers read. Two members, two samples of 1,024 points, four products."""
    m, s, p, layers, k = 2, 2, 1024, 4, fused_decoder.WIDE
    rows = m * s * p

    def f32(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    kept = tuple(f32(rows, k) for _ in range(layers + 1))
    calls = {
        "value": (lambda *a: fused_decoder._forward_kernel(*a), (f32(m, p, k), f32(m, s, k), f32(m, layers, k, k),
                                                                f32(m, layers, k), f32(m, k))),
        "backward_du": (fused_decoder._backward_kernel, (kept, f32(rows), f32(m, layers, k, k), f32(m, k))),
        "backward_grad": (fused_decoder._backward_kernel, (kept, f32(rows, k), f32(m, layers, k, k), f32(m, k))),
    }
    options = {"keep": dict(keep=True), "hidden": dict(keep=True, readout=False)}.get(kernel)
    if options is not None:
        calls[kernel] = (lambda *a: fused_decoder._forward_kernel(*a, **options), calls["value"][1])
    fn, args = calls[kernel]
    traced = jax.jit(fn).trace(*args)
    shapes = [tuple(o.shape) for o in jax.tree.leaves(traced.out_info)]
    want = {"value": [(rows,)], "keep": [(rows,)] + [(rows, k)] * (layers + 1),
            "hidden": [(rows, k)] * (layers + 2)}.get(kernel, [(rows, k)] * (layers + 1))
    assert shapes == want
    text = traced.lower(lowering_platforms=("cuda",)).as_text()
    assert "mosaic_gpu" in text and "wgmma" in text


def test_forward_mode_is_refused():
    """A custom_vjp: jvp through the fused decoder is an error (the NTK builds its models with
    XLA's layers), not a silently wrong derivative."""
    args = random_decoder(5, 2, 64, 64, 2)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda *a: fused_decoder.decode(*a, kernels=False), args, args)


def test_operands_round_to_the_nearest_tf32_value():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=20000) * 10.0 ** rng.integers(-3, 4, 20000)).astype(np.float32)
    x[:4] = [1.0 + 2.0 ** -11, -(1.0 + 2.0 ** -11), 3.0 + 2.0 ** -10, 1.0]  # two ties, one exact
    r = np.asarray(fused_decoder.round_tf32(jnp.asarray(x)))
    bits = r.view(np.uint32)
    assert not np.any(bits & 0x1FFF)  # 10 mantissa bits left
    down = (x.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)  # the TF32 value toward zero
    up = (down.view(np.uint32) + np.uint32(0x2000)).view(np.float32)  # the next one away from zero
    nearest = np.where(np.abs(x - down) < np.abs(up - x), down, up)
    tie = np.abs(x - down) == np.abs(up - x)
    np.testing.assert_array_equal(r[~tie], nearest[~tie])
    np.testing.assert_array_equal(r[tie], up[tie])  # ties away from zero
    assert np.all(np.abs(r - x) <= np.abs(x) * 2.0 ** -11)


def test_blocks_split_the_tiles_evenly():
    for tiles in (2048, 4032, 97, 132, 1):
        blocks = fused_decoder._blocks(tiles)
        assert tiles % blocks == 0 and blocks <= fused_decoder.MAX_CTAS
        assert all(tiles % d for d in range(blocks + 1, min(tiles, fused_decoder.MAX_CTAS) + 1))


def test_shapes_that_would_leave_the_gpu_idle_go_to_xla(monkeypatch):
    """The kernel runs a member's tiles in pairs. 139 samples of 64 points: 139 tiles, which
    do not pair up; 278 samples: 139 pairs, a prime, so one block would run them all. XLA's
    layers decode both. 128 samples: 64 pairs in 64 blocks, the kernel."""
    assert not fused_decoder.fills_the_gpu(139, 64) and not fused_decoder.fills_the_gpu(7, 64)
    assert not fused_decoder.fills_the_gpu(278, 64)
    assert fused_decoder.fills_the_gpu(128, 64) and fused_decoder.fills_the_gpu(8, 64)
    assert fused_decoder.fills_the_gpu(63, 4096) and fused_decoder.fills_the_gpu(32, 4096)
    called = []

    def kernel(*args, **options):
        called.append(args[1].shape[1])  # z (members, samples, 128)
        return fused_decoder._forward_in_jnp(*args, **options)

    monkeypatch.setattr(fused_decoder, "_forward_kernel", kernel)
    args = random_decoder(139, 139, 64, 16, 2)
    np.testing.assert_array_equal(np.asarray(fused_decoder.decode(*args)), np.asarray(fused_decoder.reference(*args)))
    assert called == []
    args = random_decoder(128, 128, 64, 16, 2)
    u, want = np.asarray(fused_decoder.decode(*args)), np.asarray(fused_decoder.reference(*args))
    assert called == [128]  # the kernel (here the stand-in, on weights rounded to TF32)
    np.testing.assert_allclose(u, want, rtol=0, atol=5e-3 * np.max(np.abs(want)))


CFG = ModelConfig(latent_dim=6, encoder_hidden=(12, 12), decoder_hidden=(10, 10, 10), n_heads=3,
                  n_coordinate_frequencies=3, pooling_type="mean")


RFF = dict(decoder_type="rff_output", rff_dim=6, rff_multiscale_sigmas=(0.5, 2.0))  # penultimate


@pytest.mark.parametrize("samples", [4, 5])  # 4 tiles: the kernel's stand-in; 5 (unpaired): XLA's layers
@pytest.mark.parametrize("decoder", ["standard", "penultimate_rff"])
def test_the_model_through_the_fused_decoder_is_the_same_function_with_the_same_gradients(samples, decoder):
    """The same loss; the same gradients, to the kept values' rounding where the stand-in's
    training forward keeps them (test_its_gradient_is_the_decoder_s bounds it), exactly where
    XLA's layers run. With random Fourier features at the penultimate layer (two bands) the
    kernel gives h_L and the model's own Fourier readout follows."""
    cfg = dataclasses.replace(CFG, **RFF) if decoder == "penultimate_rff" else CFG
    plain = build_model(cfg, R, seed=4)
    fused = build_model(cfg, R, seed=4, fused_decoder="jnp")
    grid = jnp.asarray(grid_coordinates(R))
    u = jnp.asarray(np.random.default_rng(3).normal(size=(samples, R * R)), jnp.float32)

    def loss(model, u):
        u_hat, z = model(grid, u, grid)
        return jnp.sum((u_hat - u) ** 2) + jnp.sum(z ** 2)

    (l0, g0), (l1, g1) = (nnx.value_and_grad(loss)(m, u) for m in (plain, fused))
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
    tolerance = 2e-3 if samples == 4 else 1e-6
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=tolerance * float(jnp.max(jnp.abs(a))))
    # the decoded value alone (not differentiated) comes from the stand-in
    z = plain.encode(grid, u)
    np.testing.assert_allclose(np.asarray(fused.decode(z, grid)), np.asarray(plain.decode(z, grid)),
                               rtol=1e-5, atol=1e-5)
    # coordinates per sample are not one grid: the XLA layers decode them
    x = jnp.broadcast_to(grid, (samples, R * R, 2))
    np.testing.assert_allclose(np.asarray(fused.decode(z, x)), np.asarray(plain.decode(z, x)), rtol=1e-6)


def test_a_group_evaluation_through_the_fused_decoder_matches_xla_s():
    """Members one after another (lax.map) and side by side (vmap, the kernel run once per
    member): each member's metrics as without the fused decoder."""
    models = {fd: [build_model(dataclasses.replace(CFG, feature_seed=s), R, seed=s, fused_decoder=fd)
                   for s in (0, 1)] for fd in ("off", "jnp")}
    statics = StepStatics("l2", "finite_difference", None, R, 4, None, None)
    data = SplitEvalData(*(prepare_eval_data(np.random.default_rng(n).normal(size=(n, 3, R, R)).astype(np.float32),
                                             3, np.array([True, False, True]), grid_coordinates(R), at_least=2)
                           for n in (7, 5)))
    bins, cutoff = radial_bins(R, 4), resolve_cutoff(R, None)
    results = {}
    for fd, members in models.items():
        graphdef = nnx.split(members[0], nnx.Param, ...)[0]
        params, rest = zip(*(nnx.split(m, nnx.Param, ...)[1:] for m in members), strict=True)
        for in_turn in (True, False):
            evaluate = group_programs(graphdef, statics, None, bins, cutoff, 2, members_in_turn=in_turn).evaluate
            results[fd, in_turn] = evaluate(stack_members(list(params)), stack_members(list(rest)), data)
    for in_turn in (True, False):
        (want, want_recon), (got, got_recon) = results["off", in_turn], results["jnp", in_turn]
        for name, value in want.items():
            np.testing.assert_allclose(np.asarray(got[name]), np.asarray(value), rtol=2e-5, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(np.asarray(got_recon), np.asarray(want_recon), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("change", "blocker"), [
    (dict(decoder_hidden=(10, 10)), "even number"),
    (dict(decoder_hidden=(10, 12, 10)), "equal hidden widths"),
    (dict(decoder_hidden=(130, 130, 130)), "equal hidden widths"),
    (dict(decoder_type="rff_output", rff_location="coordinates"), "standard decoder"),
    (dict(decoder_type="rff_output", rff_location="both"), "standard decoder"),
])
def test_a_decoder_the_kernel_cannot_run_is_refused_in_one_line(change, blocker):
    with pytest.raises(UsageError, match=blocker):
        build_model(dataclasses.replace(CFG, **change), R, seed=0, fused_decoder="jnp")
    with pytest.raises(UsageError, match="multiple of 64"):
        build_model(CFG, 6, seed=0, fused_decoder="jnp")
    with pytest.raises(UsageError, match="float32"):
        build_model(CFG, R, seed=0, fused_decoder="jnp", compute_dtype=jnp.bfloat16)


def test_runs_take_it_on_a_hopper_gpu_where_it_can_run(monkeypatch):
    config = RunConfig(model=dataclasses.replace(CFG, pooling_type="attention"))
    assert use_fused_decoder(config, "single", 64) == "off"  # this machine has no Hopper GPU
    monkeypatch.setattr(fused_decoder, "on_hopper", lambda: True)
    assert use_fused_decoder(config, "single", 64) == "kernels"
    assert use_fused_decoder(dataclasses.replace(config, kernels="pallas"), "single", 64) == "kernels"
    assert use_fused_decoder(dataclasses.replace(config, kernels="xla"), "single", 64) == "off"
    assert use_fused_decoder(config, "members", 64) == "off"
    assert use_fused_decoder(config, "data", 64) == "off"
    assert use_fused_decoder(config, "single", 6) == "off"  # 36 points per sample
    assert use_fused_decoder(dataclasses.replace(config, precision="bf16"), "single", 64) == "off"
    rff = dataclasses.replace(config, model=dataclasses.replace(CFG, decoder_type="rff_output"))
    assert use_fused_decoder(rff, "single", 64) == "kernels"  # penultimate, the default location
    for change in (dict(decoder_type="rff_output", rff_location="coordinates"), dict(rung="auto_decoder"),
                   dict(decoder_hidden=(10, 10))):
        assert use_fused_decoder(dataclasses.replace(config, model=dataclasses.replace(CFG, **change)),
                                 "single", 64) == "off"
