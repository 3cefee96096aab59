"""The one place that turns a ``fae-lab train`` command line into a :class:`RunConfig`.

Every flag of the seed's ``train_attention.py`` is accepted with its spelling and meaning
(docs/cli.md), plus what its sweeps and "next steps" need. A later flag overrides an
earlier one; ``--config FILE`` (YAML or JSON, keys spelled as the flags without dashes, e.g.
``loss_type: h1``) is read first, so flags on the command line override it.

JAX-free: the dashboards' launch form validates its values with :func:`parse_run_config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fae_lab import config as C
from fae_lab import variants
from fae_lab.cli_util import (
    OneLineArgumentParser,
    fraction,
    non_negative,
    parse_float_list,
    parse_int_list,
    path_text,
    positive,
    seed,
)
from fae_lab.errors import UsageError

# dest -> (section of RunConfig or None for top level, field name): every field, by its name.
_FIELDS: dict[str, tuple[str | None, str]] = {
    **{f.name: (None, f.name) for f in dataclasses.fields(C.RunConfig) if f.name not in C.SECTIONS},
    **{f.name: (section, f.name) for section, cls in C.SECTIONS.items() for f in dataclasses.fields(cls)},
}

_BOOLEAN_FLAGS = {f.name for cls in (C.RunConfig, *C.SECTIONS.values()) for f in dataclasses.fields(cls)
                  if isinstance(f.default, bool)}

# Settings a config file or a sweep may name (flag spelling without dashes, e.g. "loss_type").
SETTINGS = frozenset(_FIELDS)


def _hidden_sizes(text: str) -> tuple[int, ...]:
    sizes = parse_int_list(text)
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def _indices(text: str) -> tuple[int, ...]:
    values = parse_int_list(text)
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative scale indices, got {text!r}")
    return values


def _sigmas(text: str) -> tuple[float, ...]:
    values = parse_float_list(text)
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def build_parser(prog: str = "fae-lab train") -> argparse.ArgumentParser:
    """The ``fae-lab train`` parser. Defaults are SUPPRESSed: only given flags appear."""
    p = OneLineArgumentParser(
        prog=prog,
        description="Train one functional autoencoder run and stream its evaluations "
        "into a run store (docs/run-store.md).",
        argument_default=argparse.SUPPRESS,
    )
    pos_int, pos_float = positive(int), positive(float)
    nn_int, nn_float = non_negative(int), non_negative(float)

    g = p.add_argument_group("run")
    g.add_argument("--config", type=path_text, metavar="FILE", help="YAML or JSON file of settings; flags override it")
    g.add_argument("--output-dir", type=path_text, help="the run directory (the run store)")
    g.add_argument("--max-steps", type=pos_int)
    g.add_argument("--seed", type=seed, help="initialisation, batches and point subsets")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    g.add_argument("--stop-after-step", type=pos_int,
                   help="stop at the first evaluation at or after this step, resumable with --resume")
    g.add_argument("--save-best-model", action="store_true",
                   help="also keep the checkpoint with the lowest eval relative MSE")
    g.add_argument("--checkpoint-every", type=pos_int, help="checkpoint at evaluations that are multiples of N steps (default: at the first evaluation after a minute)")
    g.add_argument("--steps-per-call", type=pos_int, help="training steps per compiled call (lax.scan length; default: as many as take about a second, at most 50)")
    g.add_argument("--precision", choices=C.PRECISIONS,
                   help="bf16: bfloat16 matrix products with float32 parameters and accumulation")
    g.add_argument("--kernels", choices=C.KERNELS,
                   help="pallas: the encoder's per-point MLP and pooling (mean, attention or augmented_residual) "
                        "as one fused GPU kernel (float32; not for sweep members spread over devices); auto "
                        "(default): pallas on a GPU where allowed, else XLA; off the GPU pallas runs "
                        "in Pallas' (slow) interpreter")
    g.add_argument("--n-devices", type=pos_int,
                   help="local devices to use (default: all): a sweep's members, or each batch, are split over them")
    g.add_argument("--wandb-project", help="accepted from the seed: names the run's group")
    g.add_argument("--wandb-name", help="accepted from the seed: names the run")

    g = p.add_argument_group("data")
    g.add_argument("--data-path", type=path_text, help=".npz data file, docs/data-file.md (default: generated data)")
    g.add_argument("--training-mode", choices=C.TRAINING_MODES)
    g.add_argument("--single-scale-index", type=nn_int)
    g.add_argument("--held-out-indices", type=_indices, help='scales never trained on, e.g. "2,5"')
    g.add_argument("--test-fraction", type=fraction)
    g.add_argument("--split-seed", type=seed)
    g.add_argument("--encoder-points", type=pos_int, help="points per sample seen by the encoder (default: full grid)")
    g.add_argument("--decoder-points", type=pos_int, help="points per sample in the decoder's l2 loss (default: full grid)")
    g.add_argument("--generate-n-samples", type=pos_int)
    g.add_argument("--generate-resolution", type=pos_int)
    g.add_argument("--generate-n-scales", type=pos_int)
    g.add_argument("--generate-seed", type=seed)

    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=pos_int)
    g.add_argument("--encoder-hidden", type=_hidden_sizes, help='e.g. "64,64,64"')
    g.add_argument("--pooling-type", choices=C.POOLING_TYPES)
    g.add_argument("--n-heads", type=pos_int)
    g.add_argument("--decoder-hidden", type=_hidden_sizes, help='e.g. "100,100,100,100,100"')
    g.add_argument("--decoder-type", choices=variants.decoder_names())
    g.add_argument("--coordinate-features", choices=C.COORDINATE_FEATURES)
    g.add_argument("--n-coordinate-frequencies", type=pos_int)
    g.add_argument("--coordinate-sigma", type=pos_float)
    g.add_argument("--rff-dim", type=pos_int)
    g.add_argument("--rff-sigma", type=pos_float)
    g.add_argument("--rff-multiscale-sigmas", type=_sigmas, help='one RFF band per sigma, e.g. "0.5,1.0,2.0,4.0"')
    g.add_argument("--rff-location", choices=C.RFF_LOCATIONS)
    g.add_argument("--feature-seed", type=seed)

    g = p.add_argument_group("loss")
    g.add_argument("--loss-type", choices=variants.loss_names())
    g.add_argument("--beta", type=nn_float, help="FAE latent penalty beta * |z|^2")
    g.add_argument("--lambda-grad", type=nn_float)
    g.add_argument("--h1-form", choices=C.H1_FORMS)
    g.add_argument("--h1-k0", type=pos_float, help="reference wavenumber of the spectral H1 form")
    g.add_argument("--freq-weight-power", type=nn_float)

    g = p.add_argument_group("optimiser")
    g.add_argument("--learning-rate", "--lr", dest="learning_rate", type=pos_float)
    g.add_argument("--lr-decay-rate", type=pos_float)
    g.add_argument("--lr-decay-steps", type=pos_int)
    g.add_argument("--grad-clip", type=pos_float, help="clip the global gradient norm")
    g.add_argument("--batch-size", type=pos_int)

    g = p.add_argument_group("schedules (the seed's next steps)")
    g.add_argument("--curriculum-steps", type=nn_int,
                   help="sharpest scale first; one smoother scale added every N steps (0: off)")
    g.add_argument("--lambda-grad-warmup-steps", type=nn_int,
                   help="raise lambda_grad linearly over N steps (0: off)")
    g.add_argument("--lambda-grad-start", type=nn_float)

    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-every", type=pos_int)
    g.add_argument("--log-every", type=pos_int)
    g.add_argument("--track-spectral-metrics", action="store_true",
                   help="accepted from the seed; spectral metrics are always tracked")
    g.add_argument("--spectral-n-bins", type=pos_int)
    g.add_argument("--spectral-cutoff", type=pos_float, help="|n| of the low/high split (default R/4)")
    g.add_argument("--n-reconstruction-samples", type=pos_int)
    g.add_argument("--eval-batch-size", type=pos_int)
    g.add_argument("--track-ntk-every", type=pos_int,
                   help="at evaluations whose step is a multiple of N, the NTK spectrum into RUN/ntk.zarr (FAE only)")
    _add_ladder_arguments(p)
    return p


def _add_ladder_arguments(p: argparse.ArgumentParser) -> None:
    """The bottleneck ladder's flags and the training-split evaluation (issue 12)."""
    g = p.add_argument_group("bottleneck ladder")
    g.add_argument("--rung", choices=C.RUNGS,
                   help="fae (default): encoder and decoder; auto_decoder: one free latent per "
                        "training field, no encoder (evaluated on training samples only); "
                        "decoder_alone: the decoder fitted to one training sample with fixed latents")
    g.add_argument("--rung-sample", type=non_negative(int),
                   help="decoder_alone: which training sample (index into the training split, default 0)")
    g.add_argument("--eval-train-samples", type=positive(int),
                   help="training samples evaluated like the test split, as eval_train_* "
                        "(default: as many as the test split)")


def config_file_arguments(path: str) -> list[str]:
    """Turn a YAML/JSON settings file into flag tokens (so argparse validates them)."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--config: no such file: {path}")
    text = file.read_text()
    try:
        if file.suffix.lower() == ".json":
            payload = json.loads(text)
        else:
            import yaml

            payload = yaml.safe_load(text)
    except Exception as err:  # the parser's own message, on one line
        raise UsageError(f"--config {path}: not valid YAML/JSON ({str(err).splitlines()[0]})") from None
    if payload is None:
        return []
    if not isinstance(payload, dict):
        raise UsageError(f"--config {path}: expected a mapping of settings")
    return settings_argv(payload, f"--config {path}")


def settings_argv(settings: Mapping[str, Any], where: str = "settings") -> list[str]:
    """``{"loss_type": "h1", "decoder_hidden": [100, 100], "resume": True}`` -> ``["--loss-type",
    "h1", "--decoder-hidden", "100,100", "--resume"]``: the flags that set them, in order.
    Names may use ``_`` or ``-``; a false boolean or a None is left out; an unknown name is a
    :class:`UsageError` that starts with ``where``."""
    tokens: list[str] = []
    for key, value in settings.items():
        dest = str(key).replace("-", "_")
        if dest not in SETTINGS:
            raise UsageError(f"{where}: unknown setting {key!r}")
        flag = "--" + dest.replace("_", "-")
        if dest in _BOOLEAN_FLAGS:
            if value:
                tokens.append(flag)
            continue
        if value is None:
            continue
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        tokens += [flag, str(value)]
    return tokens


def parse_run_config(argv: Sequence[str], prog: str = "fae-lab train", *,
                     raise_usage_errors: bool = False) -> C.RunConfig:
    """Parse a command line into a validated :class:`RunConfig`.

    Raises :class:`UsageError` (one line) on any bad value; argparse's own errors exit 2, or
    raise :class:`UsageError` too with ``raise_usage_errors``.
    """
    parser = build_parser(prog)
    parser.raise_usage_errors = raise_usage_errors
    argv = list(argv)
    first = parser.parse_args(argv)
    if getattr(first, "config", None):
        argv = config_file_arguments(first.config) + argv
    given = vars(parser.parse_args(argv))
    given.pop("config", None)
    sections: dict[str, dict[str, Any]] = {name: {} for name in C.SECTIONS}
    top: dict[str, Any] = {}
    for dest, value in given.items():
        section, name = _FIELDS[dest]
        (top if section is None else sections[section])[name] = value
    base = C.RunConfig()

    config = dataclasses.replace(
        base, **top,
        **{name: dataclasses.replace(getattr(base, name), **values) for name, values in sections.items()},
    )
    if "output_dir" not in top:
        config = dataclasses.replace(config, output_dir=default_output_dir(config))
    validate(config)
    return config


def default_output_dir(config: C.RunConfig) -> str:
    """``runs/<wandb-name or tags>`` when no ``--output-dir`` is given."""
    name = config.wandb_name or "_".join(C.tags(config))
    group = config.wandb_project
    return str(Path("runs") / group / name) if group else str(Path("runs") / name)


def validate(config: C.RunConfig) -> None:
    """Cross-flag rules argparse cannot express; each failure is one line naming the flags."""
    m, d, loss = config.model, config.data, config.loss
    if d.decoder_points is not None and variants.loss_variant(loss.loss_type).full_grid:
        raise UsageError(
            f"--decoder-points: the {loss.loss_type} loss needs the full grid; "
            "use --loss-type l2 with a decoder point subset"
        )
    if m.rff_dim % 2:
        raise UsageError(f"--rff-dim: expected an even number of features (cos and sin pairs), got {m.rff_dim}")
    if m.pooling_type != "mean" and m.encoder_hidden[-1] % m.n_heads:
        raise UsageError(
            f"--n-heads: must divide the encoder width {m.encoder_hidden[-1]}, got {m.n_heads}"
        )
    if d.generate_resolution < 8 and d.data_path is None:
        raise UsageError(f"--generate-resolution: expected at least 8, got {d.generate_resolution}")
    if d.data_path is None and d.generate_n_samples < 2:
        raise UsageError(f"--generate-n-samples: expected at least 2 (a test split needs one), got {d.generate_n_samples}")
    if m.rung_sample and m.rung != "decoder_alone":
        raise UsageError(f"--rung-sample: only with --rung decoder_alone, not --rung {m.rung}")
    if config.eval.track_ntk_every is not None and m.rung != "fae":
        raise UsageError(f"--track-ntk-every: the NTK's encoder part needs --rung fae, not --rung {m.rung}")
    if config.resume and config.overwrite:
        raise UsageError("--resume and --overwrite: choose one")
