"""The bottleneck ladder's models: the FAE's coordinate decoder without the encoder.

Phase A asks where the FAE's fine detail is lost. Three rungs, same decoder g(z, x):

- ``fae``: z = f(u), the encoder of :class:`~fae_lab.models.fae.FunctionalAutoencoder`;
- ``auto_decoder``: z = Z[i] with Z ``(n_fields, L)`` a trained table, one free latent per
  training field (Park et al., DeepSDF, CVPR 2019), optimised with the decoder; no encoder,
  so it is evaluated on training fields only. It shows what a latent of size L allows;
- ``decoder_alone``: z = Z[i] with Z fixed (not trained), on one training sample: the
  decoder's own spectral bias, fitting a known function.

A *field* is one sample at one scale, index ``i = sample * T + scale`` (T the data's
scales): the FAE encodes each field separately, so its latent table does too. On a
single-scale run the decoder alone fits exactly one field with one fixed latent; on a
multi-scale run it fits the sample's training scales, each with its own fixed latent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fae_lab.config import RUNGS, ModelConfig
from fae_lab.errors import UsageError
from fae_lab.models.decoder import CoordinateDecoder
from fae_lab.models.fae import FunctionalAutoencoder, build_model
from fae_lab.models.features import CoordinateFeatures
from fae_lab.models.initialise import initialised

# Initial latents of the auto-decoder: small, as DeepSDF's N(0, 0.01^2), so that the decoder
# starts near one function for every field and the latents move apart as they learn.
AUTO_DECODER_INIT_STD = 0.01


class FixedLatent(nnx.Variable):
    """Latent codes that are not trained (``nnx.Param`` is; this is in the model's rest)."""


class LatentDecoder(nnx.Module):
    """g(Z[i], x): the coordinate decoder reading its latent from a table.

    ``latents`` is ``(n_fields, L)``: an ``nnx.Param`` drawn from N(0, 0.01²) when
    ``trained`` (auto-decoder), else a :class:`FixedLatent` drawn from N(0, 1) (decoder
    alone: fixed, distinct codes of the size an encoder's output has).

    ``__call__(x (P,2) | (B,P,2), field (B,) int) -> (u_hat (B,P), z (B,L))``.
    """

    def __init__(self, cfg: ModelConfig, resolution: int, n_fields: int, *, trained: bool,
                 compute_dtype=jnp.float32, rngs: nnx.Rngs):
        if n_fields < 1:
            raise UsageError(f"--rung: the latent table needs at least one field, got {n_fields}")
        features = CoordinateFeatures(
            cfg.coordinate_features, cfg.n_coordinate_frequencies, cfg.coordinate_sigma,
            resolution, rngs=rngs,
        )
        self.decoder = CoordinateDecoder(cfg, resolution, features, compute_dtype=compute_dtype, rngs=rngs)
        draw = jax.random.normal(rngs.params(), (n_fields, cfg.latent_dim), jnp.float32)
        # Built under jit (build_rung_model), XLA would fold the scale below into the normal's
        # own constant factor, changing last bits; the barrier keeps the eager draw's bits.
        draw = jax.lax.optimization_barrier(draw)
        self.trained = trained
        self.latents = (nnx.Param(AUTO_DECODER_INIT_STD * draw) if trained else FixedLatent(draw))

    def __call__(self, x_dec: jax.Array, field: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = self.latents.value[field]
        return self.decoder(z, x_dec), z


def build_rung_model(cfg: ModelConfig, resolution: int, n_fields: int, *, seed: int = 0,
                     compute_dtype=jnp.float32, fused_encoder: bool = False,
                     fused_decoder: str = "off") -> nnx.Module:
    """The model of ``cfg.rung``: the FAE (:func:`build_model`), or a :class:`LatentDecoder`
    with ``n_fields`` latents (trained for ``auto_decoder``, fixed for ``decoder_alone``), constructed
    in one compiled program (:func:`~fae_lab.models.initialise.initialised`)."""
    if cfg.rung not in RUNGS:
        raise UsageError(f"--rung: expected one of {', '.join(RUNGS)}, got {cfg.rung!r}")
    if cfg.rung == "fae":
        return build_model(cfg, resolution, seed=seed, compute_dtype=compute_dtype,
                           fused_encoder=fused_encoder, fused_decoder=fused_decoder)
    return initialised(LatentDecoder, cfg, resolution, n_fields, trained=cfg.rung == "auto_decoder",
                       compute_dtype=compute_dtype, seed=seed, feature_seed=cfg.feature_seed)


def apply_model(model: nnx.Module, x_enc: jax.Array, u_enc: jax.Array, x_dec: jax.Array,
                field: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(u_hat (B,P), z (B,L))`` of any rung: the FAE encodes ``u_enc`` at ``x_enc`` and
    ignores ``field``; a latent decoder looks ``field (B,)`` up and ignores the encoder's input."""
    if isinstance(model, FunctionalAutoencoder):
        return model(x_enc, u_enc, x_dec)
    return model(x_dec, field)

