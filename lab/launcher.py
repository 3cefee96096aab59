"""Start a training run from the dashboards: build, validate and launch its command line.

The values of the launch form become a ``fae-lab train`` argument list (:func:`train_argv`),
which is checked by the trainer's own parser (:func:`validate_train_argv`, calling
``fae_lab.train.args.parse_run_config``), so the command line's choices and ranges are the one
source of truth. :func:`launch` then starts ``python -m fae_lab.train ARGV`` as a background
process from an argument list: no shell ever sees what was typed. Its output goes to
``RUNS/.launches/NAME.log`` (a hidden folder, which run discovery skips).

The form is a web page, so its data path is not trusted: :func:`allowed_data_file` takes only
a file inside the data directory (``fae-lab serve --data-dir``, default the runs directory),
after symlinks and ``..`` are resolved, and refuses everything else with one message, the same
whether the file is outside, missing, not a file or unreadable (the page must not tell which
files exist on the server).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fae_lab import config as C
from fae_lab import variants
from fae_lab.errors import UsageError

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
LOG_FOLDER = ".launches"



@dataclass(frozen=True)
class FormField:
    """One setting of the launch form: its ``fae-lab train`` name, its label and its starting
    value (None: :class:`fae_lab.config.RunConfig`'s default, which is ``fae-lab train``'s).
    ``choices`` (a function, so a variant registered later is offered too) makes it a
    selector; ``text`` a text box whose empty value leaves the setting at its default (a
    setting whose default is None, or a list such as ``0.5,1,2``); otherwise it is a number of
    the default's type. ``used_by`` names the loss and decoder variants that read it
    (:mod:`fae_lab.variants`); empty: every run."""

    name: str
    label: str
    default: Any = None
    choices: Callable[[], Sequence[str]] | None = None
    text: bool = False
    used_by: tuple[str, ...] = ()


def _parser_choices(name: str) -> Callable[[], Sequence[str]] | None:
    """The ``choices`` of ``fae-lab train``'s flag for ``name`` (None if it has none)."""
    from fae_lab.train.args import build_parser  # JAX-free; built on demand

    for action in build_parser()._actions:
        if action.dest == name and action.choices:
            choices = tuple(action.choices)
            return lambda: choices
    return None


# Labels of the variant settings (fae_lab.variants lists the names; these say what they are).
VARIANT_LABELS = {
    "lambda_grad": "λ_grad (H¹ term)", "h1_form": "H¹ form", "h1_k0": "H¹ k₀ (spectral form)",
    "freq_weight_power": "Frequency weight power p", "rff_location": "RFF location",
    "rff_dim": "RFF dim", "rff_sigma": "RFF σ", "rff_multiscale_sigmas": "RFF σs (multi-band)",
}


def variant_fields() -> tuple[FormField, ...]:
    """A field for every setting the variant tables name (a loss's sweepable and static
    settings, a decoder's settings), in table order, each with the variants that read it."""
    users: dict[str, list[str]] = {}
    for loss in variants.LOSSES.values():
        for name in (*loss.sweepable, *loss.static):
            users.setdefault(name, []).append(loss.name)
    for decoder in variants.DECODERS.values():
        for name in decoder.settings:
            users.setdefault(name, []).append(decoder.name)
    fields = []
    for name, used_by in users.items():
        default = config_default(name)
        fields.append(FormField(
            name, VARIANT_LABELS.get(name, name.replace("_", " ")), choices=_parser_choices(name),
            text=default is None or isinstance(default, tuple), used_by=tuple(used_by)))
    return tuple(fields)


# The form's fields, declared once; in the order they appear on the command line. The loss and
# decoder choices, and the settings of each variant, are the variant tables' (fae_lab.variants).
CHOICE_FIELDS = (
    FormField("training_mode", "Training mode", choices=lambda: C.TRAINING_MODES),
    FormField("loss_type", "Loss type", choices=variants.loss_names),
    FormField("decoder_type", "Decoder type", choices=variants.decoder_names),
    FormField("pooling_type", "Pooling type", choices=lambda: C.POOLING_TYPES),
)
NUMBER_FIELDS = (
    FormField("latent_dim", "Latent dim"),
    FormField("beta", "β (latent penalty)"),
    FormField("max_steps", "Max steps"),
    FormField("learning_rate", "Learning rate"),
    FormField("batch_size", "Batch size"),
    FormField("eval_every", "Evaluate every"),
    FormField("seed", "Seed"),
)
GENERATE_FIELDS = (  # generated data, used when no data file is given
    FormField("generate_n_samples", "Samples"),
    FormField("generate_resolution", "Resolution R"),
    FormField("generate_n_scales", "Scales T"),
)


def config_default(name: str) -> Any:
    """The default of the ``fae-lab train`` setting ``name`` in :class:`RunConfig`."""
    base = C.RunConfig()
    for section in (base, *(getattr(base, s) for s in C.SECTIONS)):
        if name in {f.name for f in dataclasses.fields(section)}:
            return getattr(section, name)
    raise KeyError(name)


VARIANT_FIELDS = variant_fields()
FLAGS = tuple(f.name for f in (*CHOICE_FIELDS, *NUMBER_FIELDS, *VARIANT_FIELDS))
GENERATE_FLAGS = tuple(f.name for f in GENERATE_FIELDS)
TEXT_FLAGS = tuple(f.name for f in VARIANT_FIELDS if f.text)


def form_defaults() -> dict[str, Any]:
    """The form's starting values: ``fae-lab train``'s defaults (:class:`RunConfig`'s), a
    text field's as text ("" for None, ``0.5,1`` for a list)."""
    values = {}
    for f in (*CHOICE_FIELDS, *NUMBER_FIELDS, *VARIANT_FIELDS, *GENERATE_FIELDS):
        value = config_default(f.name) if f.default is None else f.default
        if f.text:
            value = "" if value is None else ",".join(map(str, value)) if isinstance(
                value, tuple) else str(value)
        values[f.name] = value
    values["data_path"] = ""
    return values


def run_directory(runs_dir: str | Path, name: str) -> Path:
    """``runs_dir / name`` for a new run; the name must be a plain folder name, not yet taken."""
    if not RUN_NAME.fullmatch(name or ""):
        raise UsageError(f"run name {name!r}: use letters, digits, '.', '_' or '-' "
                         "(starting with a letter or digit, at most 100 characters)")
    path = Path(runs_dir) / name
    if path.exists():
        raise UsageError(f"run name {name!r}: {path} already exists")
    return path


def data_file_refusal(data_dir: str | Path) -> UsageError:
    """The one message for every data path the form may not use."""
    return UsageError(f"--data-path: not an allowed data file (files under {data_dir} only)")


def allowed_data_file(data_path: str | os.PathLike, data_dir: str | Path) -> Path:
    """``data_path`` (relative paths: relative to ``data_dir``) resolved, if it is a readable
    regular file inside ``data_dir`` once symlinks and ``..`` are resolved.

    Every refusal raises the same :func:`data_file_refusal`, so the answer does not reveal
    whether a path outside ``data_dir`` exists.
    """
    refusal = data_file_refusal(data_dir)
    try:
        root = Path(data_dir).resolve(strict=True)
        candidate = Path(os.path.expanduser(os.fspath(data_path).strip()))
        resolved = (root / candidate).resolve(strict=True)  # an absolute candidate replaces root
        allowed = (resolved.is_relative_to(root) and resolved.is_file()
                   and os.access(resolved, os.R_OK))
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
        raise refusal from None
    if not allowed:
        raise refusal
    return resolved


def train_argv(values: Mapping[str, Any], output_dir: str | Path) -> list[str]:
    """The ``fae-lab train`` arguments for the form's ``values`` (keys of :data:`FLAGS`,
    ``data_path`` and :data:`GENERATE_FLAGS`).

    A non-empty ``data_path`` (made absolute) trains on that file, else on generated data of
    the given size. An empty text field (:data:`TEXT_FLAGS`) is left out, so the trainer's
    default holds. Every value is one list element; nothing is joined or quoted.
    """
    from fae_lab.train.args import settings_argv

    data_path = str(values.get("data_path") or "").strip()
    names = FLAGS if data_path else (*FLAGS, *GENERATE_FLAGS)
    settings = {name: values.get(name) for name in names}
    for name in TEXT_FLAGS:  # an empty text field: the trainer's default (left out)
        if name in settings:
            settings[name] = str(settings[name] or "").strip() or None
    if data_path:
        settings["data_path"] = str(Path(data_path).expanduser().absolute())
    return ["--output-dir", str(Path(output_dir).absolute()), *settings_argv(settings, "launch form")]


def validate_train_argv(argv: Sequence[str]) -> C.RunConfig:
    """The :class:`RunConfig` of ``argv`` by ``fae_lab.train.args.parse_run_config``.

    Raises :class:`UsageError` with the parser's one-line message, or if the data file does
    not exist.
    """
    try:
        from fae_lab.train.args import parse_run_config
    except ImportError as err:
        raise UsageError(f"the trainer cannot be imported ({err}); cannot launch runs") from None
    config = parse_run_config(list(argv), raise_usage_errors=True)
    data_path = config.data.data_path
    if data_path is not None and not Path(data_path).is_file():
        raise UsageError(f"--data-path: no such file: {data_path}")
    return config


@dataclass
class Launch:
    """A training process started from the dashboards."""

    name: str
    run_dir: Path
    argv: list[str]
    process: subprocess.Popen
    log_path: Path

    @property
    def status(self) -> str:
        """The process's state in words: running, finished (exit status 0), failed with its
        exit status, or stopped by a signal (named)."""
        return exit_words(self.process.poll())

    @property
    def command(self) -> str:
        """What ran, as a shell would show it (display only: it was started from a list)."""
        return shlex.join(["fae-lab", "train", *self.argv])

    def log_tail(self, lines: int = 5, max_bytes: int = 4096) -> str:
        """The log's last ``lines`` lines (from its last ``max_bytes``: polled every half second)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, log.seek(0, 2) - max_bytes))
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def exit_words(code: int | None) -> str:
    """A process's return code in words (None: still running; negative: killed by that
    signal, as :class:`subprocess.Popen` reports it)."""
    if code is None:
        return "running"
    if code == 0:
        return "finished (exit status 0)"
    if code < 0:
        try:
            return f"stopped by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"stopped by signal {-code}"
    meaning = {1: "an error", 2: "a usage error (bad setting)"}.get(code, "an error")
    return f"failed: exit status {code}, {meaning}"


def launch(runs_dir: str | Path, name: str, values: Mapping[str, Any],
           data_dir: str | Path | None = None) -> Launch:
    """Validate the form's ``values`` for a new run ``name`` under ``runs_dir`` and start it.

    A data path must be a file under ``data_dir`` (default ``runs_dir``; see
    :func:`allowed_data_file`). Starts ``[sys.executable, "-m", "fae_lab.train", *argv]`` in
    its own session (it outlives the server), output to ``runs_dir/.launches/name.log``.
    """
    run_dir = run_directory(runs_dir, name)
    if str(values.get("data_path") or "").strip():
        data_file = allowed_data_file(values["data_path"], runs_dir if data_dir is None else data_dir)
        values = {**values, "data_path": str(data_file)}
    argv = train_argv(values, run_dir)
    validate_train_argv(argv)
    log_dir = Path(runs_dir) / LOG_FOLDER
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "fae_lab.train", *argv],
                                   stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return Launch(name, run_dir, argv, process, log_path)
