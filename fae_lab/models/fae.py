"""The functional autoencoder u -> z = f(u) -> g(z, ·), and how to build and size one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fae_lab.config import ModelConfig
from fae_lab.errors import UsageError
from fae_lab.models.decoder import CoordinateDecoder
from fae_lab.models.encoder import PointSetEncoder
from fae_lab.models.features import CoordinateFeatures
from fae_lab.models.initialise import initialised


class FunctionalAutoencoder(nnx.Module):
    """Encoder f and coordinate decoder g sharing one coordinate embedding γ(x).

    ``encode(x (B,P,2) | (P,2), u (B,P)) -> z (B,L)``;
    ``decode(z (B,L), x (P,2) | (B,P,2)) -> u_hat (B,P)``;
    ``__call__(x_enc, u_enc, x_dec) -> (u_hat, z)``: the encoder and the decoder may see
    different point sets (resolution invariance, point subsampling).

    The training objective (elsewhere) is ½‖g(f(u)) − u‖² + β‖z‖² (Bunker et al., JMLR 2025).
    """

    def __init__(self, cfg: ModelConfig, resolution: int, *, compute_dtype=jnp.float32,
                 fused_encoder: bool = False, fused_decoder: str = "off", rngs: nnx.Rngs):
        features = CoordinateFeatures(
            cfg.coordinate_features, cfg.n_coordinate_frequencies, cfg.coordinate_sigma,
            resolution, rngs=rngs,
        )
        self.encoder = PointSetEncoder(cfg, features, compute_dtype=compute_dtype,
                                       fused=fused_encoder, rngs=rngs)
        self.decoder = CoordinateDecoder(cfg, resolution, features, compute_dtype=compute_dtype,
                                         fused=fused_decoder, rngs=rngs)

    def encode(self, x: jax.Array, u: jax.Array) -> jax.Array:
        return self.encoder(x, u)

    def decode(self, z: jax.Array, x: jax.Array) -> jax.Array:
        return self.decoder(z, x)

    def __call__(self, x_enc: jax.Array, u_enc: jax.Array, x_dec: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = self.encode(x_enc, u_enc)
        return self.decode(z, x_dec), z


def build_model(cfg: ModelConfig, resolution: int, *, seed: int = 0,
                compute_dtype=jnp.float32, fused_encoder: bool = False,
                fused_decoder: str = "off") -> FunctionalAutoencoder:
    """A freshly initialised model for fields on an R x R grid (R = ``resolution``).

    Trained parameters are drawn from ``seed``; the fixed Fourier matrices from
    ``cfg.feature_seed``, so members of a seed sweep share their features. Parameters are
    float32; ``compute_dtype=jnp.bfloat16`` runs the hidden layers' matrix products in bf16
    (Fourier phases, pooling sums, softmax and the readout stay float32; a decoder with
    penultimate RFF stays float32 throughout, see :class:`CoordinateDecoder`).
    ``fused_encoder`` computes the encoder's point embedding and pooling (mean, attention or
    augmented residual) with the fused Pallas kernels of :mod:`fae_lab.models.fused` and
    :mod:`fae_lab.models.fused_attention` (same function and parameters). ``fused_decoder``
    ("kernels", or "jnp" for its CPU stand-in) runs a standard decoder's hidden layers through
    :mod:`fae_lab.models.fused_decoder` (same function and parameters).
    The model is constructed in one compiled program (:func:`~fae_lab.models.initialise.initialised`):
    the parameters ``FunctionalAutoencoder(..., rngs=nnx.Rngs(seed, features=cfg.feature_seed))``
    draws eagerly (bit for bit under XLA's default flags; a few ulps apart under the tests' flags).
    """
    if resolution < 2:
        raise UsageError(f"resolution: expected a grid of at least 2 x 2 points, got {resolution}")
    if jnp.dtype(compute_dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise UsageError(f"--precision: expected float32 or bf16 compute, got {jnp.dtype(compute_dtype)}")
    return initialised(FunctionalAutoencoder, cfg, resolution, compute_dtype=compute_dtype,
                       fused_encoder=fused_encoder, fused_decoder=fused_decoder, seed=seed,
                       feature_seed=cfg.feature_seed)


def count_parameters(model: nnx.Module) -> int:
    """Number of trained scalars: the sizes of every ``nnx.Param`` (fixed Fourier matrices excluded)."""
    return sum(int(leaf.size) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
