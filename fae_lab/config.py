"""Frozen configuration of one run.

One place turns the command line into these (``fae_lab.train.args``) and one place turns
them into tags and ``config.json`` (:func:`to_json_dict`, :func:`tags`). Every other module
receives the dataclass it needs and nothing else.

Defaults reproduce the reference FAE of Bunker et al., "Autoencoders in Function Space"
(JMLR 2025): encoder MLP 64-64-64, decoder MLP 5x100, GELU, latent 64, 16 Gaussian
coordinate frequencies of scale 1, Adam 1e-3 decayed x0.98 every 1000 steps, batch 32,
except the pooling, which defaults to the multi-head attention of the seed's
``train_attention.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from fae_lab import variants

TrainingMode = Literal["single_scale", "multi_scale"]
PoolingType = Literal["mean", "attention", "augmented_residual"]
RFFLocation = Literal["penultimate", "coordinates", "both"]
CoordinateFeatures = Literal["gaussian", "periodic"]
H1Form = Literal["finite_difference", "spectral"]
Precision = Literal["float32", "bf16"]
Kernels = Literal["auto", "xla", "pallas"]
Rung = Literal["fae", "auto_decoder", "decoder_alone"]

TRAINING_MODES = ("single_scale", "multi_scale")
POOLING_TYPES = ("mean", "attention", "augmented_residual")
RFF_LOCATIONS = ("penultimate", "coordinates", "both")
COORDINATE_FEATURES = ("gaussian", "periodic")
H1_FORMS = ("finite_difference", "spectral")
PRECISIONS = ("float32", "bf16")
# auto: the fused Pallas encoder on a GPU where the model allows it (fae_lab.train.run.use_fused_encoder)
KERNELS = ("auto", "xla", "pallas")
# The bottleneck ladder (fae_lab.models.autodecoder): the full FAE; one free latent per training
# field and no encoder; the decoder alone on one training sample with fixed latents.
RUNGS = ("fae", "auto_decoder", "decoder_alone")
# The seed's tag scheme, in its order: tag name -> the RunConfig section holding it. The only
# place the order is written; config.json's "tags" list and the dashboards' filter follow it.
TAG_SECTIONS = {"training_mode": "data", "loss_type": "loss", "decoder_type": "model",
                "pooling_type": "model"}
TAG_NAMES = tuple(TAG_SECTIONS)
# The loss and decoder choices, their loss terms and which losses need the full grid are the
# variant tables' (fae_lab.variants); LOSS_TYPES, DECODER_TYPES, LOSS_TERM_NAMES and
# FULL_GRID_LOSSES are read from them when asked for (module __getattr__ below), so a variant
# registered later is listed too.
_DERIVED = {
    "LOSS_TYPES": variants.loss_names,
    "DECODER_TYPES": variants.decoder_names,
    "LOSS_TERM_NAMES": lambda: {v.name: v.terms for v in variants.LOSSES.values()},
    "FULL_GRID_LOSSES": lambda: tuple(v.name for v in variants.LOSSES.values() if v.full_grid),
}


def __getattr__(name: str):
    if name in _DERIVED:
        return _DERIVED[name]()
    raise AttributeError(f"module 'fae_lab.config' has no attribute {name!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the fields come from and which parts of them a run sees.

    ``data_path=None`` means the built-in generated microstructures
    (``generate_*`` fields give their size).
    """

    data_path: str | None = None
    training_mode: TrainingMode = "multi_scale"
    single_scale_index: int = 1
    held_out_indices: tuple[int, ...] | None = None  # None: from the file, else the default
    test_fraction: float = 0.2
    split_seed: int = 0
    # Points per sample: None is the full R x R grid. The encoder and the decoder's loss draw
    # their subsets independently, on the device.
    encoder_points: int | None = None
    decoder_points: int | None = None
    # Built-in data (when data_path is None).
    generate_n_samples: int = 256
    generate_resolution: int = 64
    generate_n_scales: int = 6
    generate_seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """Encoder f(u) -> z and coordinate decoder g(z, x)."""

    latent_dim: int = 64
    encoder_hidden: tuple[int, ...] = (64, 64, 64)
    pooling_type: PoolingType = "attention"
    n_heads: int = 4
    decoder_hidden: tuple[int, ...] = (100, 100, 100, 100, 100)
    decoder_type: str = "standard"  # a name of fae_lab.variants.DECODERS
    # Coordinate features gamma(x) shared by encoder and decoder input.
    coordinate_features: CoordinateFeatures = "gaussian"
    n_coordinate_frequencies: int = 16
    coordinate_sigma: float = 1.0
    # Random Fourier features of the decoder (decoder_type="rff_output").
    rff_dim: int = 512
    rff_sigma: float = 1.0
    rff_multiscale_sigmas: tuple[float, ...] | None = None
    rff_location: RFFLocation = "penultimate"
    feature_seed: int = 0  # seeds the fixed (untrained) Fourier matrices
    # Bottleneck ladder: which model stands in front of the decoder (RUNGS), and for
    # decoder_alone the training sample (index into the training split) it fits.
    rung: Rung = "fae"
    rung_sample: int = 0


@dataclass(frozen=True)
class LossConfig:
    """Training objective: a data term (``loss_type``) plus the FAE penalty beta * |z|^2."""

    loss_type: str = "l2"  # a name of fae_lab.variants.LOSSES
    beta: float = 1e-3
    lambda_grad: float = 0.5
    h1_form: H1Form = "finite_difference"
    h1_k0: float | None = None  # reference wavenumber of the spectral H1 form; None: R / (2 pi)
    freq_weight_power: float = 1.0


@dataclass(frozen=True)
class OptimConfig:
    """Adam with an exponentially decaying learning rate and optional clipping."""

    learning_rate: float = 1e-3
    lr_decay_rate: float = 0.98
    lr_decay_steps: int = 1000
    grad_clip: float | None = None
    batch_size: int = 32


@dataclass(frozen=True)
class ScheduleConfig:
    """The seed's "next steps": a curriculum over scales and a rising lambda_grad."""

    # Curriculum: the sharpest training scale first; one more (smoother) scale is added every
    # ``curriculum_steps`` steps. 0 disables it.
    curriculum_steps: int = 0
    # lambda_grad rises linearly from ``lambda_grad_start`` to LossConfig.lambda_grad over
    # ``lambda_grad_warmup_steps`` steps. 0 disables it.
    lambda_grad_warmup_steps: int = 0
    lambda_grad_start: float = 0.0


@dataclass(frozen=True)
class EvalConfig:
    """What is measured at every evaluation."""

    eval_every: int = 500
    log_every: int = 50
    track_spectral_metrics: bool = True
    spectral_n_bins: int = 16
    spectral_cutoff: float | None = None  # |n| of the low/high split; None: R / 4
    n_reconstruction_samples: int = 4
    eval_batch_size: int = 64
    # Training samples evaluated like the test split (eval_train_* variables): the first N of
    # the training split; None: as many as the test split has (all, for decoder_alone's one).
    eval_train_samples: int | None = None
    # At the evaluations whose step is a multiple of N, the NTK spectrum into RUN/ntk.zarr
    # (fae_lab.ntk.run.NTKTracker); None: never.
    track_ntk_every: int | None = None


@dataclass(frozen=True)
class RunConfig:
    """One training run, fully resolved."""

    output_dir: str = "runs/default"
    max_steps: int = 50_000
    seed: int = 0
    steps_per_call: int | None = None  # None: sized from the step time (fae_lab.train.chunks)
    precision: Precision = "float32"
    kernels: Kernels = "auto"
    save_best_model: bool = False
    checkpoint_every: int | None = None  # None: at an evaluation once a minute has passed
    resume: bool = False
    overwrite: bool = False
    stop_after_step: int | None = None  # stop (resumably) at the first evaluation at or after it
    n_devices: int | None = None  # local devices to use (None: all); see fae_lab.train.devices
    wandb_project: str | None = None  # accepted from the seed: names the run's group
    wandb_name: str | None = None  # accepted from the seed: names the run
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def tags(config: RunConfig) -> list[str]:
    """The seed's tag scheme: ``[training_mode, loss_type, decoder_type, pooling_type]``; a run
    of a ladder rung other than the FAE adds its rung as a fifth tag (``auto_decoder`` or
    ``decoder_alone``), so the seed's four keep their places."""
    seed_tags = [
        config.data.training_mode,
        config.loss.loss_type,
        config.model.decoder_type,
        config.model.pooling_type,
    ]
    return seed_tags if config.model.rung == "fae" else [*seed_tags, config.model.rung]
    """The seed's tag scheme: ``[training_mode, loss_type, decoder_type, pooling_type]``
    (:data:`TAG_NAMES`, in that order)."""
    return [getattr(getattr(config, TAG_SECTIONS[name]), name) for name in TAG_NAMES]


def to_json_dict(config: RunConfig) -> dict[str, Any]:
    """Plain JSON-able nested dict (tuples become lists)."""
    return dataclasses.asdict(config)


# RunConfig's sections: field name -> its dataclass.
SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "eval": EvalConfig,
}


def from_json_dict(payload: dict[str, Any]) -> RunConfig:
    """Inverse of :func:`to_json_dict`; unknown keys are an error (a typo must not vanish)."""
    top: dict[str, Any] = {}
    for key, value in payload.items():
        if key in SECTIONS:
            top[key] = _build(SECTIONS[key], value)
        else:
            top[key] = value
    return _build(RunConfig, top)


def _build(cls, values: dict[str, Any]):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise KeyError(f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}")
    converted = {}
    for key, value in values.items():
        if isinstance(value, list):
            value = tuple(value)
        converted[key] = value
    return cls(**converted)
