"""Coordinate decoder g(z, x) -> u(x): an MLP on [z, coordinate features], standard or with RFF.

One :class:`CoordinateDecoder` for every ``--decoder-type``: a variant is a function, registered
with ``@decoder_parts(name)``, that returns its :class:`DecoderParts` (which coordinate
features feed the MLP, and which fixed map, if any, sits between the last hidden layer and the
readout). Its row in :data:`fae_lab.variants.DECODERS` lists it for the command line and the
dashboards (docs/architecture.md, "Adding a decoder variant").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from fae_lab import variants
from fae_lab.config import RFF_LOCATIONS, ModelConfig
from fae_lab.errors import UsageError
from fae_lab.models import fused_decoder
from fae_lab.models.features import CoordinateFeatures, HiddenFourierFeatures, fourier_readout
from fae_lab.models.layers import FactorisedLinear, GeluStack


@dataclass(frozen=True)
class DecoderParts:
    """What a decoder variant changes around the shared MLP.

    ``coordinate_features``: γ of the first layer (the model's shared features, or the
    variant's own). ``branch_per_band``: run the hidden MLP once per band of γ
    (``coordinate_features.bands``) and concatenate, instead of once on all of γ.
    ``penultimate_features``: a fixed map of the concatenated last hidden layer before the
    readout (None: the readout reads h_L). ``float32``: compute in float32 whatever
    ``--precision`` says.
    """

    coordinate_features: CoordinateFeatures
    branch_per_band: bool = False
    penultimate_features: nnx.Module | None = None
    float32: bool = False

    @property
    def n_branches(self) -> int:
        return self.coordinate_features.n_bands if self.branch_per_band else 1

    @property
    def branch_dim(self) -> int:
        features = self.coordinate_features
        return features.band_dim if self.branch_per_band else features.out_dim


# (cfg, resolution, the model's shared coordinate features, rngs) -> the variant's parts.
PartsFunction = Callable[[ModelConfig, int, CoordinateFeatures, nnx.Rngs], DecoderParts]
_PARTS: dict[str, PartsFunction] = {}


def decoder_parts(name: str) -> Callable[[PartsFunction], PartsFunction]:
    """Register the parts function of the decoder variant ``name`` (a row of
    :data:`fae_lab.variants.DECODERS`). Fixed features draw from ``rngs.features``."""

    def register(function: PartsFunction) -> PartsFunction:
        if name in _PARTS:
            raise ValueError(f"decoder {name!r} already has a parts function")
        _PARTS[name] = function
        return function

    return register


@decoder_parts("standard")
def _standard(cfg: ModelConfig, resolution: int, shared: CoordinateFeatures,
              rngs: nnx.Rngs) -> DecoderParts:
    return DecoderParts(shared)


@decoder_parts("rff_output")
def _rff_output(cfg: ModelConfig, resolution: int, shared: CoordinateFeatures,
                rngs: nnx.Rngs) -> DecoderParts:
    """RFF at ``cfg.rff_location``: penultimate, coordinates or both (see CoordinateDecoder)."""
    if cfg.rff_dim < 2 or cfg.rff_dim % 2:
        raise UsageError(
            f"--rff-dim: expected an even number >= 2 of features (cos and sin pairs), got {cfg.rff_dim}"
        )
    sigmas = tuple(cfg.rff_multiscale_sigmas) if cfg.rff_multiscale_sigmas else (cfg.rff_sigma,)
    on_coordinates = cfg.rff_location in ("coordinates", "both")
    on_penultimate = cfg.rff_location in ("penultimate", "both")
    features = shared
    if on_coordinates:
        features = CoordinateFeatures(cfg.coordinate_features, cfg.rff_dim // 2, sigmas,
                                      resolution, rngs=rngs)
    parts = DecoderParts(features, branch_per_band=on_coordinates, float32=on_penultimate)
    if on_penultimate:
        width = parts.n_branches * cfg.decoder_hidden[-1]
        parts = DecoderParts(features, on_coordinates,
                             HiddenFourierFeatures(width, cfg.rff_dim, sigmas, rngs=rngs),
                             float32=True)
    return parts


class CoordinateDecoder(nnx.Module):
    """g(z, x): decode a latent z at any coordinates x.

    ``decoder_type="standard"`` (Bunker et al., JMLR 2025), with γ the shared coordinate
    features and ``decoder_hidden = (H_1, ..., H_L)``:

        h_1 = GELU(W_z z + W_γ γ(x) + b)      (factorised [z; γ(x)] layer: W_z z once per
                                               sample, W_γ γ(x) once per point, broadcast-added)
        h_L = GeluStack(h_1),    g(z, x) = w·h_L + c

    ``decoder_type="rff_output"`` changes it at ``rff_location`` (K = number of σ: one, or one
    per ``rff_multiscale_sigmas``; each RFF band has ``rff_dim`` features, see
    :class:`HiddenFourierFeatures`):

    - ``penultimate``: g = w·φ(h_L) + c with φ the random Fourier features of the last hidden
      layer, B_b ~ N(0, σ_b²) (IFeF-PINN, Wu et al., arXiv 2510.19399).
    - ``coordinates``: γ(x) is replaced by RFF of x, ``rff_dim`` features per band of kind
      ``coordinate_features`` (gaussian or periodic) with σ in cycles per unit length. With K
      bands, the same hidden MLP runs on each band's embedding γ_b(x) (one branch per band) and
      the branch outputs are concatenated before the readout (Wang, Wang & Perdikaris, CMAME
      2021): g = w·[h_L^1, ..., h_L^K] + c.
    - ``both``: coordinate RFF branches, then φ of the concatenated branch outputs.

    The fixed matrices are :class:`~fae_lab.models.features.FourierBasis` variables. The
    readout runs in float32 whatever the compute dtype. With penultimate RFF, ``__call__``
    computes w·φ(h_L) + c from the phases t = B h_L by
    :func:`~fae_lab.models.features.fourier_readout`, never forming φ ``(B, P, 2Kn)``: the
    readout's kernel (the same ``nnx.Linear`` parameter as ``readout(penultimate())``, laid
    out as φ is) is split into its cosine and sine halves. ``penultimate()`` still returns φ
    (for the NTK and the tests). With penultimate RFF the whole decoder
    runs in float32 too: φ turns a rounding error δh into a phase error 2π B_b δh, and bf16's
    δh/h ≈ 2⁻⁹ then moves u_hat by several per cent (benchmarks/RESULTS.md), which would confound the very
    high-frequency error this option is meant to study.

    Shapes: ``z (B, L)``, ``x (P, 2)`` (one grid for the batch) or ``(B, P, 2)`` -> ``(B, P)``
    float32. ``coordinate_features`` is the model's shared γ; the variant's :class:`DecoderParts` may
    replace it.
    """

    def __init__(self, cfg: ModelConfig, resolution: int, coordinate_features: CoordinateFeatures,
                 *, compute_dtype=jnp.float32, fused: str = "off", rngs: nnx.Rngs):
        widths = tuple(cfg.decoder_hidden)
        if not widths or min(widths) < 1:
            raise UsageError(f"--decoder-hidden: expected one or more widths >= 1, got {widths}")
        if cfg.decoder_type not in _PARTS:
            variants.decoder_variant(cfg.decoder_type)  # a one-line UsageError for an unknown name
            raise ValueError(f"decoder {cfg.decoder_type!r} has a table row but no parts function")
        if cfg.rff_location not in RFF_LOCATIONS:
            raise UsageError(f"--rff-location: expected one of {', '.join(RFF_LOCATIONS)}, got {cfg.rff_location!r}")
        parts = _PARTS[cfg.decoder_type](cfg, resolution, coordinate_features, rngs)
        if parts.float32:
            compute_dtype = jnp.float32
        self.n_branches = parts.n_branches
        self.branch_per_band = parts.branch_per_band
        self.coordinate_features = parts.coordinate_features
        self.first = FactorisedLinear(parts.branch_dim, cfg.latent_dim, widths[0],
                                      compute_dtype=compute_dtype, rngs=rngs)
        self.hidden = GeluStack(widths, compute_dtype=compute_dtype, rngs=rngs)
        self.penultimate_features = parts.penultimate_features
        if parts.penultimate_features is not None:
            readout_dim = parts.penultimate_features.out_dim
        else:
            readout_dim = self.n_branches * widths[-1]
        self.readout = nnx.Linear(readout_dim, 1, dtype=jnp.float32, rngs=rngs)
        if fused not in ("off", "kernels", "jnp"):
            raise ValueError(f"decoder: fused must be off, kernels or jnp, got {fused!r}")
        blockers = fused_decoder.fusable(cfg, resolution * resolution, jnp.dtype(compute_dtype) == jnp.float32)
        if fused != "off" and blockers:
            raise UsageError("the fused decoder needs " + ", ".join(blockers))
        # "kernels": the Mosaic GPU kernels of fae_lab.models.fused_decoder; "jnp": the same
        # decomposition in jnp (the CPU's stand-in, for tests). Off: XLA's layers.
        self.fused = fused

    def coordinate_branches(self, x: jax.Array) -> jax.Array:
        """Coordinate input of each branch: ``(..., P, K, F)`` float32 (K = 1 unless multi-band
        coordinate RFF)."""
        if self.branch_per_band:
            return self.coordinate_features.bands(x)
        return self.coordinate_features(x)[..., None, :]

    def last_hidden(self, z: jax.Array, x: jax.Array) -> jax.Array:
        """h_L, the branches concatenated: ``(B, P, K·H_L)`` in the compute dtype."""
        if z.ndim != 2 or x.ndim not in (2, 3) or x.shape[-1] != 2:
            raise ValueError(f"decoder: expected z (B,L) and x (P,2) or (B,P,2), got {z.shape}, {x.shape}")
        h = self.first.coordinate_term(self.coordinate_branches(x))  # (P,K,H) or (B,P,K,H)
        if h.ndim == 3:
            h = h[None]
        h = jax.nn.gelu(h + self.first.input_term(z)[:, None, None, :])
        h = self.hidden(h)
        return h.reshape((*h.shape[:2], -1))

    def penultimate(self, z: jax.Array, x: jax.Array) -> jax.Array:
        """The readout's input features: ``(B, P, D)`` (h_L, branches concatenated, or φ of it)."""
        h = self.last_hidden(z, x)
        if self.penultimate_features is not None:
            h = self.penultimate_features(h)
        return h

    def __call__(self, z: jax.Array, x: jax.Array) -> jax.Array:
        fused = self.fused != "off" and x.ndim == 2 and x.shape[0] % fused_decoder.TILE == 0
        features = self.penultimate_features
        if fused and features is None:
            return self._fused(z, x)
        if not isinstance(features, HiddenFourierFeatures):
            return self.readout(self.penultimate(z, x).astype(jnp.float32))[..., 0]
        # w·φ(h_L) + c without φ: the readout's kernel, laid out as φ is ([cos, sin] per band),
        # split into its cosine and sine halves (same parameters as readout(penultimate())).
        h = self._fused_hidden(z, x) if fused else self.last_hidden(z, x)
        t = features.phases(h)  # (B, P, K, n)
        kernel = self.readout.kernel[...].reshape(t.shape[-2], 2, t.shape[-1])
        u = fourier_readout(t, kernel[:, 0], kernel[:, 1])
        return u + self.readout.bias[...][0]

    def _fused_operands(self, x: jax.Array):
        """c (P, H) (the first layer's coordinate term, its bias included) and the hidden
        layers' stacked kernels and biases: x (P, 2), one grid for the batch."""
        c = self.first.coordinate_term(self.coordinate_features(x))
        w = jnp.stack([layer.kernel[...] for layer in self.hidden.layers])
        b = jnp.stack([layer.bias[...] for layer in self.hidden.layers])
        return c, w, b

    def _fused(self, z: jax.Array, x: jax.Array) -> jax.Array:
        """The standard decoder through :func:`fae_lab.models.fused_decoder.decode` (same
        parameters, same function)."""
        c, w, b = self._fused_operands(x)
        u = fused_decoder.decode(c, self.first.input_term(z), w, b, self.readout.kernel[...][:, 0],
                                 kernels=self.fused == "kernels")
        return u.reshape(z.shape[0], x.shape[0]) + self.readout.bias[...][0]

    def _fused_hidden(self, z: jax.Array, x: jax.Array) -> jax.Array:
        """h_L (B, P, H), as :meth:`last_hidden` gives it, through
        :func:`fae_lab.models.fused_decoder.last_hidden` (the decoder with penultimate RFF:
        its readout is w·φ(h_L))."""
        c, w, b = self._fused_operands(x)
        h = fused_decoder.last_hidden(c, self.first.input_term(z), w, b, kernels=self.fused == "kernels")
        return h.reshape(z.shape[0], x.shape[0], -1)
