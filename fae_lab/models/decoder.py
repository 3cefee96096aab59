"""Coordinate decoder g(z, x) -> u(x): an MLP on [z, coordinate features], standard or with RFF."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fae_lab.config import DECODER_TYPES, RFF_LOCATIONS, ModelConfig
from fae_lab.errors import UsageError
from fae_lab.models.encoder import FactorisedLinear, GeluStack
from fae_lab.models.features import CoordinateFeatures, HiddenFourierFeatures


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
    readout runs in float32 whatever the compute dtype. With penultimate RFF the whole decoder
    runs in float32 too: φ turns a rounding error δh into a phase error 2π B_b δh, and bf16's
    δh/h ≈ 2⁻⁹ then moves u_hat by several per cent (benchmarks/RESULTS.md), which would confound the very
    high-frequency error this option is meant to study.

    Shapes: ``z (B, L)``, ``x (P, 2)`` (one grid for the batch) or ``(B, P, 2)`` -> ``(B, P)``
    float32.
    """

    def __init__(self, cfg: ModelConfig, resolution: int, coordinate_features: CoordinateFeatures,
                 *, compute_dtype=jnp.float32, rngs: nnx.Rngs):
        widths = tuple(cfg.decoder_hidden)
        if not widths or min(widths) < 1:
            raise UsageError(f"--decoder-hidden: expected one or more widths >= 1, got {widths}")
        if cfg.decoder_type not in DECODER_TYPES:
            raise UsageError(f"--decoder-type: expected one of {', '.join(DECODER_TYPES)}, got {cfg.decoder_type!r}")
        if cfg.rff_location not in RFF_LOCATIONS:
            raise UsageError(f"--rff-location: expected one of {', '.join(RFF_LOCATIONS)}, got {cfg.rff_location!r}")
        rff = cfg.decoder_type == "rff_output"
        sigmas = tuple(cfg.rff_multiscale_sigmas) if cfg.rff_multiscale_sigmas else (cfg.rff_sigma,)
        if rff and (cfg.rff_dim < 2 or cfg.rff_dim % 2):
            raise UsageError(
                f"--rff-dim: expected an even number >= 2 of features (cos and sin pairs), got {cfg.rff_dim}"
            )
        coordinate_rff = rff and cfg.rff_location in ("coordinates", "both")
        penultimate_rff = rff and cfg.rff_location in ("penultimate", "both")

        if coordinate_rff:
            coordinate_features = CoordinateFeatures(
                cfg.coordinate_features, cfg.rff_dim // 2, sigmas, resolution, rngs=rngs
            )
            self.n_branches, branch_dim = coordinate_features.n_bands, coordinate_features.band_dim
        else:
            self.n_branches, branch_dim = 1, coordinate_features.out_dim
        if penultimate_rff:
            compute_dtype = jnp.float32
        self.coordinate_rff = coordinate_rff
        self.coordinate_features = coordinate_features
        self.first = FactorisedLinear(branch_dim, cfg.latent_dim, widths[0],
                                      compute_dtype=compute_dtype, rngs=rngs)
        self.hidden = GeluStack(widths, compute_dtype=compute_dtype, rngs=rngs)
        penultimate_dim = self.n_branches * widths[-1]
        if penultimate_rff:
            self.penultimate_features = HiddenFourierFeatures(penultimate_dim, cfg.rff_dim, sigmas, rngs=rngs)
            readout_dim = self.penultimate_features.out_dim
        else:
            self.penultimate_features = None
            readout_dim = penultimate_dim
        self.readout = nnx.Linear(readout_dim, 1, dtype=jnp.float32, rngs=rngs)

    def coordinate_branches(self, x: jax.Array) -> jax.Array:
        """Coordinate input of each branch: ``(..., P, K, F)`` float32 (K = 1 unless multi-band
        coordinate RFF)."""
        if self.coordinate_rff:
            return self.coordinate_features.bands(x)
        return self.coordinate_features(x)[..., None, :]

    def penultimate(self, z: jax.Array, x: jax.Array) -> jax.Array:
        """The readout's input features: ``(B, P, D)`` (h_L, branches concatenated, or φ of it)."""
        if z.ndim != 2 or x.ndim not in (2, 3) or x.shape[-1] != 2:
            raise ValueError(f"decoder: expected z (B,L) and x (P,2) or (B,P,2), got {z.shape}, {x.shape}")
        h = self.first.coordinate_term(self.coordinate_branches(x))  # (P,K,H) or (B,P,K,H)
        if h.ndim == 3:
            h = h[None]
        h = jax.nn.gelu(h + self.first.input_term(z)[:, None, None, :])
        h = self.hidden(h)
        h = h.reshape((*h.shape[:2], -1))
        if self.penultimate_features is not None:
            h = self.penultimate_features(h)
        return h

    def __call__(self, z: jax.Array, x: jax.Array) -> jax.Array:
        return self.readout(self.penultimate(z, x).astype(jnp.float32))[..., 0]
