"""Fixed Fourier feature maps: of coordinates (the FAE's γ(x)) and of hidden layers.

Every map here is a fixed random matrix B that is drawn once and never trained. It is held in
a :class:`FourierBasis` variable, not an ``nnx.Param``, so ``nnx.split(model, nnx.Param, ...)``
leaves it out of the trained state, of the optimiser and of parameter counts.

The embedding of phases t = B·v (in cycles) is

    φ(v) = [cos 2πt, sin 2πt],

evaluated after reducing t to [-1/2, 1/2] (exact for the maths, since cos 2πt and sin 2πt have
period 1 in t) so that large phases keep full float32 accuracy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from fae_lab.config import COORDINATE_FEATURES
from fae_lab.errors import UsageError

# Candidate rows drawn per wanted row when all-zero integer frequencies are redrawn.
_PERIODIC_CANDIDATES = 32


class FourierBasis(nnx.Variable):
    """A fixed, untrained frequency matrix (cycles per unit of its input)."""


def fourier_embedding(phases: jax.Array) -> jax.Array:
    """``(..., n)`` phases t in cycles -> ``(..., 2n)`` float32 ``[cos 2πt, sin 2πt]``."""
    phases = phases.astype(jnp.float32)
    phases = phases - jnp.round(phases)
    angle = 2.0 * jnp.pi * phases
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def gaussian_frequencies(key: jax.Array, n: int, dim: int, sigma: float) -> jax.Array:
    """``(n, dim)`` float32 frequencies B with entries drawn from N(0, σ²) (Tancik et al. 2020)."""
    return sigma * jax.random.normal(key, (n, dim), jnp.float32)


def periodic_frequencies(key: jax.Array, n: int, sigma: float, resolution: int) -> jax.Array:
    """``(n, 2)`` float32 integer frequencies B = round(σ·N(0, 1)), clipped to |B_ij| <= R/2.

    Integer frequencies make γ(x) exactly periodic on the unit torus. The all-zero row (a
    constant feature) is redrawn: rows are drawn in order and the first ``n`` nonzero ones kept.
    Raises :class:`UsageError` when σ is so small that too few nonzero rows come up.
    """
    chosen = _draw_periodic(key, n, sigma, resolution // 2)
    if not isinstance(chosen, jax.core.Tracer):  # traced (a jitted constructor): check_drawn
        _check_periodic(chosen, sigma)
    return chosen


def _check_periodic(chosen: jax.Array, sigma: float) -> None:
    """Raise :class:`UsageError` when a drawn ``(n, 2)`` periodic matrix has an all-zero row."""
    if not bool(jnp.all(jnp.any(chosen != 0, -1))):
        raise UsageError(
            f"periodic Fourier features: sigma={sigma} is too small to draw {chosen.shape[0]} nonzero "
            "integer frequencies; use a larger sigma or gaussian features"
        )


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _draw_periodic(key: jax.Array, n: int, sigma: float, half: int) -> jax.Array:
    candidates = jnp.round(sigma * jax.random.normal(key, (n * _PERIODIC_CANDIDATES, 2)))
    candidates = jnp.clip(candidates, -half, half).astype(jnp.float32)
    nonzero = jnp.any(candidates != 0, axis=-1)
    order = jnp.argsort(~nonzero, stable=True)
    return candidates[order[:n]]


def _as_sigmas(sigma: float | Sequence[float], what: str) -> tuple[float, ...]:
    sigmas = (float(sigma),) if isinstance(sigma, int | float) else tuple(float(s) for s in sigma)
    if not sigmas or any(not s > 0 for s in sigmas):
        raise UsageError(f"{what}: expected one or more values > 0, got {sigma!r}")
    return sigmas


class CoordinateFeatures(nnx.Module):
    """Fourier features γ(x) of coordinates x in [0, 1)², one band per σ, concatenated.

    For each band b with frequency matrix B_b of shape ``(n, 2)`` (rows n_i, cycles per unit):

        γ_b(x) = [cos 2πB_b x, sin 2πB_b x] ∈ R^{2n},    γ(x) = [γ_1(x), ..., γ_K(x)] ∈ R^{2nK}

    ``kind="gaussian"``: B_b ~ N(0, σ_b²) (Tancik et al., NeurIPS 2020); not periodic on the
    torus in general. ``kind="periodic"``: integer B_b = round(σ_b·N(0, 1)), clipped to
    |n_ij| <= R/2 and with no all-zero row, so γ(x + e_j) = γ(x) exactly. Several σ give the
    multi-scale embedding of Wang, Wang & Perdikaris (CMAME 384, 2021).

    The phases B_b x are formed elementwise (2 products), never as a matrix product, so a GPU's
    reduced-precision (TF32) matmul mode cannot turn input rounding into phase noise.

    Shapes: ``x (..., 2)`` -> ``__call__`` ``(..., 2nK)``, ``bands`` ``(..., K, 2n)``.
    """

    def __init__(
        self,
        kind: str,
        n_frequencies: int,
        sigma: float | Sequence[float],
        resolution: int | None,
        *,
        rngs: nnx.Rngs,
    ):
        if kind not in COORDINATE_FEATURES:
            raise UsageError(
                f"coordinate features: expected one of {', '.join(COORDINATE_FEATURES)}, got {kind!r}"
            )
        if n_frequencies < 1:
            raise UsageError(f"coordinate features: expected >= 1 frequency, got {n_frequencies}")
        sigmas = _as_sigmas(sigma, "coordinate features sigma")
        if kind == "periodic" and (resolution is None or resolution < 2):
            raise UsageError(f"periodic coordinate features need a grid resolution >= 2, got {resolution}")
        keys = jax.random.split(rngs.features(), len(sigmas))
        if kind == "gaussian":
            matrices = [gaussian_frequencies(k, n_frequencies, 2, s) for k, s in zip(keys, sigmas, strict=True)]
        else:
            matrices = [
                periodic_frequencies(k, n_frequencies, s, resolution) for k, s in zip(keys, sigmas, strict=True)
            ]
        self.kind = kind
        self.sigmas = sigmas
        self.n_frequencies = n_frequencies
        self.frequencies = FourierBasis(jnp.stack(matrices))  # (K, n, 2)

    def check_drawn(self) -> None:
        """Raise :class:`UsageError` when a periodic band drew too few nonzero rows (the check
        :func:`periodic_frequencies` makes, for features whose constructor was traced)."""
        if self.kind == "periodic":
            for matrix, sigma in zip(self.frequencies[...], self.sigmas, strict=True):
                _check_periodic(matrix, sigma)

    @property
    def n_bands(self) -> int:
        return len(self.sigmas)

    @property
    def band_dim(self) -> int:
        """Features per band, 2n."""
        return 2 * self.n_frequencies

    @property
    def out_dim(self) -> int:
        """All features, 2nK."""
        return self.n_bands * self.band_dim

    def bands(self, x: jax.Array) -> jax.Array:
        """``x (..., 2)`` -> ``(..., K, 2n)`` float32: γ_b(x) for each band b."""
        if x.shape[-1] != 2:
            raise ValueError(f"coordinates must have a last axis of 2 (x, y), got shape {x.shape}")
        freqs = self.frequencies[...]
        freqs = freqs.reshape((1,) * (x.ndim - 1) + freqs.shape)
        x = x.astype(jnp.float32)[..., None, None, :]
        phases = x[..., 0] * freqs[..., 0] + x[..., 1] * freqs[..., 1]
        return fourier_embedding(phases)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x (..., 2)`` -> γ(x) ``(..., 2nK)`` float32."""
        return self.bands(x).reshape((*x.shape[:-1], self.out_dim))


class HiddenFourierFeatures(nnx.Module):
    """Random Fourier features of a hidden layer h ∈ R^d, one band per σ, concatenated.

    For each band b, B_b ~ N(0, σ_b²/d) of shape ``(n_features/2, d)``, fixed, and

        φ_b(h) = [cos 2πB_b h, sin 2πB_b h] ∈ R^{n_features},   φ(h) = [φ_1(h), ..., φ_K(h)].

    The 1/d in the variance makes σ a scale per unit of the activations' root mean square: a
    phase 2πB_b h has standard deviation 2πσ_b·rms(h) whatever the layer width. Without it the
    seed's σ = 1 on a 100-wide layer gives phases of tens of radians, noise that the readout
    cannot use (measured: such a run learns only the mean field; benchmarks/archive/demo_science.md).

    ``n_features`` (the ``--rff-dim`` of the command line) counts output features per band,
    cosines and sines together, so it must be even: n_features/2 frequencies per band and
    K·n_features features in all. This is the penultimate-layer RFF of IFeF-PINN (Wu, Aguiar,
    Johansson, Barreau, arXiv 2510.19399): it makes the readout's kernel stationary in h.

    The phases t = B h of all K bands are one product of h with the stacked ``(K·n, d)``
    matrix, in float32 with the dot algorithm :func:`phase_algorithm` picks (``algorithm``
    overrides it; see there for why a cheap one is not good enough). B is held out of
    differentiation (``stop_gradient``): it is fixed, so no gradient is ever formed for it.
    Shapes: ``h (..., d)`` -> ``phases (..., K, n_features/2)`` (cycles) and ``__call__``
    ``(..., K·n_features)`` float32.
    """

    def __init__(self, in_dim: int, n_features: int, sigmas: float | Sequence[float], *,
                 algorithm: str | None = None, rngs: nnx.Rngs):
        if n_features < 2 or n_features % 2:
            raise UsageError(
                f"--rff-dim: expected an even number >= 2 of features (cos and sin pairs), got {n_features}"
            )
        sigmas = _as_sigmas(sigmas, "--rff-sigma / --rff-multiscale-sigmas")
        keys = jax.random.split(rngs.features(), len(sigmas))
        matrices = [
            gaussian_frequencies(k, n_features // 2, in_dim, s / math.sqrt(in_dim))
            for k, s in zip(keys, sigmas, strict=True)
        ]
        self.in_dim = in_dim
        self.n_features = n_features
        self.sigmas = sigmas
        self.algorithm = algorithm  # None: phase_algorithm() of the backend that runs it
        self.frequencies = FourierBasis(jnp.stack(matrices))  # (K, n_features/2, d)

    @property
    def out_dim(self) -> int:
        return len(self.sigmas) * self.n_features

    def phases(self, h: jax.Array) -> jax.Array:
        """``h (..., d)`` -> t = B_b h ``(..., K, n_features/2)`` float32, in cycles."""
        freqs = jax.lax.stop_gradient(self.frequencies[...])  # (K, n, d)
        n_bands, n, d = freqs.shape
        # One (..., d) x (d, K·n) product for all bands: no K-batched einsum.
        t = jnp.einsum("...d,fd->...f", h.astype(jnp.float32), freqs.reshape(n_bands * n, d),
                       precision=self.algorithm or phase_algorithm())
        return t.reshape((*h.shape[:-1], n_bands, n))

    def __call__(self, h: jax.Array) -> jax.Array:
        """``h (..., d)`` -> φ(h) ``(..., K·n_features)`` float32."""
        return fourier_embedding(self.phases(h)).reshape((*h.shape[:-1], self.out_dim))


# Per backend, the dot algorithms tried for the phases, most wanted first (HIGHEST always works).
_PHASE_ALGORITHMS = {
    "gpu": ("BF16_BF16_F32_X3", "TF32_TF32_F32_X3"),
    "cuda": ("BF16_BF16_F32_X3", "TF32_TF32_F32_X3"),
    "rocm": ("BF16_BF16_F32_X3", "TF32_TF32_F32_X3"),
    "tpu": ("BF16_BF16_F32_X6",),
}
HIGHEST = "highest"


def phase_algorithm(backend: str | None = None) -> str:
    """The dot algorithm of the hidden phases t = B h on ``backend`` (default: JAX's default).

    A rounding error δt of the phases moves the readout by
    δu = Σ_f 2π δt_f (−w_cf sin 2πt_f + w_sf cos 2πt_f), so the product's relative rounding ε
    matters through |t|·ε. The yardstick is the rounding h already carries: the hidden
    layers' products run at the backend's default precision (TF32 on recent NVIDIA GPUs,
    2⁻¹¹ relative), so t = B h reaches the product with a phase noise of order |t|·2⁻¹¹ (the
    test suite checks this with h rounded to TF32). The phase product must add much less than
    that of its own:

    - GPU: ``BF16_BF16_F32_X3`` (each operand split into a bf16 pair, three bf16 tensor-core
      products: ε ≈ 2⁻¹⁶, well under h's own 2⁻¹¹), else ``TF32_TF32_F32_X3`` (ε ≈ 2⁻²¹).
      Plain TF32 (ε ≈ 2⁻¹¹) would double the noise already there. HIGHEST runs on Hopper's
      CUDA cores. ``benchmarks/bench_rff.py --algorithms ...`` measures each preset's phase
      error against float64 and its time; the figures are in benchmarks/RESULTS.md.
    - TPU: ``BF16_BF16_F32_X6`` (three bf16 parts, six products).
    - CPU and anything else: ``"highest"`` (true float32; the CPU has no faster exact path).

    A preset that the backend refuses to compile falls back to the next, then to ``"highest"``.
    """
    backend = backend or jax.default_backend()
    for name in _PHASE_ALGORITHMS.get(backend, ()):
        if _compiles(name, backend):
            return name
    return HIGHEST


@functools.cache
def _compiles(algorithm: str, backend: str) -> bool:
    """Whether a tiny float32 product with ``algorithm`` compiles on ``backend``."""
    def product(a, b):
        return jnp.matmul(a, b, precision=algorithm)

    try:
        # Placed on one of the backend's devices, the operands make it lower and compile there
        # (ahead of time: nothing runs, and nothing enters a trace this is called from).
        device = jax.local_devices(backend=backend)[0]
        spec = jax.ShapeDtypeStruct((16, 16), jnp.float32,
                                    sharding=jax.sharding.SingleDeviceSharding(device))
        jax.jit(product).lower(spec, spec).compile()
    except Exception:  # any refusal, in lowering or in compiling, means "not on this backend"
        return False
    return True


def fourier_readout(phases: jax.Array, cos_weights: jax.Array, sin_weights: jax.Array, *,
                    recompute: bool = False) -> jax.Array:
    """The linear readout of φ without forming φ: ``(..., K, n)`` phases t (cycles) and
    ``(K, n)`` weights -> ``(...)`` float32

        w·φ = Σ_{b,f} w^c_{bf} cos 2πt_{bf} + w^s_{bf} sin 2πt_{bf}.

    It equals ``φ @ w`` with ``w = [w^c_1, w^s_1, ..., w^c_K, w^s_K]``, the layout of
    :class:`HiddenFourierFeatures`, but neither the ``(..., 2Kn)`` features, their
    concatenation nor the cotangent of φ (an outer product g ⊗ w) is ever formed: the
    derivatives are elementwise in t,

        ∂/∂t_{bf} = 2π (−w^c_{bf} sin 2πt_{bf} + w^s_{bf} cos 2πt_{bf}),
        ∂/∂w^c_{bf} = cos 2πt_{bf},   ∂/∂w^s_{bf} = sin 2πt_{bf},

    so XLA fuses cos and sin into the reductions. By default cos and sin are kept from the
    forward pass as residuals (two ``(..., K, n)`` arrays written and read back). With
    ``recompute=True`` the function runs under ``jax.checkpoint`` instead: t and the weights
    are the only residuals kept for the derivatives, and cos and sin are recomputed from t
    where they are needed (less memory, but the transcendental functions run again, behind a
    barrier that also keeps XLA from fusing across it). Keeping was the faster of the two on
    the CPU and on an H200 (``benchmarks/bench_rff.py``, figures in benchmarks/RESULTS.md), so
    the decoder uses the default on every backend. (A checkpoint, not a ``jax.custom_vjp``:
    the NTK's matrix-free product takes forward-mode derivatives too.)
    """
    return (jax.checkpoint(_fourier_readout) if recompute else _fourier_readout)(
        phases, cos_weights, sin_weights)


def _fourier_readout(phases: jax.Array, cos_weights: jax.Array, sin_weights: jax.Array) -> jax.Array:
    t = phases.astype(jnp.float32)
    angle = 2.0 * jnp.pi * (t - jnp.round(t))
    lead = (1,) * (t.ndim - 2)
    wc, ws = cos_weights.reshape(lead + cos_weights.shape), sin_weights.reshape(lead + sin_weights.shape)
    return jnp.sum(wc * jnp.cos(angle) + ws * jnp.sin(angle), axis=(-2, -1))
