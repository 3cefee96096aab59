"""The functional autoencoder in Flax NNX: coordinate features, encoder, decoder, the whole.

Typical use: ``model = build_model(cfg.model, resolution, seed=cfg.seed)``, then
``graphdef, params, fixed = nnx.split(model, nnx.Param, ...)`` once and pure functions of
``params`` that call ``nnx.merge(graphdef, params, fixed)``.
"""

from fae_lab.models.decoder import CoordinateDecoder, DecoderParts, decoder_parts
from fae_lab.models.encoder import (
    AttentionPool,
    AugmentedResidualPool,
    MeanPool,
    PointSetEncoder,
)
from fae_lab.models.fae import FunctionalAutoencoder, build_model, count_parameters
from fae_lab.models.features import CoordinateFeatures, FourierBasis, HiddenFourierFeatures
from fae_lab.models.layers import FactorisedLinear, GeluStack

__all__ = [
    "AttentionPool",
    "AugmentedResidualPool",
    "CoordinateDecoder",
    "CoordinateFeatures",
    "DecoderParts",
    "FactorisedLinear",
    "FourierBasis",
    "FunctionalAutoencoder",
    "GeluStack",
    "HiddenFourierFeatures",
    "MeanPool",
    "PointSetEncoder",
    "build_model",
    "count_parameters",
    "decoder_parts",
]
