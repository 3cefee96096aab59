"""The variant tables: one row per training loss and one row per decoder. NumPy-free, JAX-free.

Everything that lists losses or decoders derives from these two tables: the ``--loss-type`` and
``--decoder-type`` choices (:mod:`fae_lab.train.args`, and ``fae_lab.config.LOSS_TYPES`` /
``DECODER_TYPES``), the loss terms a run logs as ``train_loss_<term>`` (and so the names of the
run store's variables), which losses need whole R x R fields (no ``--decoder-points``), the
launch form's choices (``lab.launcher``), the fake runs of :mod:`fae_lab.testing` and the table
in docs/architecture.md (:func:`markdown_table`, checked by a test).

A row says *what* a variant is; its module says *how*: the loss's term function in
:mod:`fae_lab.losses` (``@loss_terms("name")``), the decoder's parts in
:mod:`fae_lab.models.decoder` (``@decoder_parts("name")``). Adding a variant touches that
module and this table, nothing else (docs/architecture.md, "Adding a loss").
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from fae_lab.errors import UsageError

# The FAE penalty beta |z|^2 is added to every loss and logged as train_loss_latent.
LATENT_TERM = "latent"


@dataclass(frozen=True)
class LossVariant:
    """One ``--loss-type``.

    ``terms``: the data-loss terms it returns, in the order they are logged
    (``train_loss_<term>``; they sum to the data loss). ``full_grid``: defined on whole R x R
    fields only (FFTs, finite differences), so ``--decoder-points`` is refused. ``sweepable``:
    the settings it reads as traced values (members of one vmapped sweep may differ in them).
    ``static``: the settings that select its code (one compiled program per value).
    """

    name: str
    terms: tuple[str, ...]
    full_grid: bool
    sweepable: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    summary: str = ""


@dataclass(frozen=True)
class DecoderVariant:
    """One ``--decoder-type``: the settings it reads beyond the shared MLP ones."""

    name: str
    settings: tuple[str, ...] = ()
    summary: str = ""


LOSSES: dict[str, LossVariant] = {}
DECODERS: dict[str, DecoderVariant] = {}


def register_loss(variant: LossVariant) -> LossVariant:
    """Add a row to :data:`LOSSES` (a name may be registered once)."""
    _add(LOSSES, variant, "loss")
    return variant


def register_decoder(variant: DecoderVariant) -> DecoderVariant:
    """Add a row to :data:`DECODERS` (a name may be registered once)."""
    _add(DECODERS, variant, "decoder")
    return variant


def _add(table: dict, variant, family: str) -> None:
    if variant.name in table:
        raise ValueError(f"{family} {variant.name!r} is already registered")
    table[variant.name] = variant


# --- The tables -----------------------------------------------------------------------------
_H1 = ("h1_form", "h1_k0")  # the gradient term's form and reference wavenumber select code

register_loss(LossVariant(
    "l2", ("l2",), full_grid=False,
    summary="mean e²; the only loss defined on scattered decoder points"))
register_loss(LossVariant(
    "h1", ("l2", "grad"), full_grid=True, sweepable=("lambda_grad",), static=_H1,
    summary="mean e² + λ_grad G(e), G finite-difference or spectral"))
register_loss(LossVariant(
    "fourier_weighted", ("fourier",), full_grid=True, sweepable=("freq_weight_power",),
    summary="Σ_n w_n |ê_n|², w_n ∝ max(|n|, 1)^p"))
register_loss(LossVariant(
    "combined", ("fourier", "grad"), full_grid=True,
    sweepable=("freq_weight_power", "lambda_grad"), static=_H1,
    summary="Σ_n w_n |ê_n|² + λ_grad G(e)"))

register_decoder(DecoderVariant(
    "standard", summary="MLP on [z, γ(x)] (Bunker et al., JMLR 2025)"))
register_decoder(DecoderVariant(
    "rff_output", settings=("rff_location", "rff_dim", "rff_sigma", "rff_multiscale_sigmas"),
    summary="random Fourier features at the penultimate layer, the coordinates or both"))


# --- Queries --------------------------------------------------------------------------------
def loss_names() -> tuple[str, ...]:
    """The ``--loss-type`` choices, in table order."""
    return tuple(LOSSES)


def decoder_names() -> tuple[str, ...]:
    """The ``--decoder-type`` choices, in table order."""
    return tuple(DECODERS)


def loss_variant(name: str) -> LossVariant:
    """The row of ``--loss-type name``; an unknown name is a one-line :class:`UsageError`."""
    return _row(LOSSES, name, "--loss-type")


def decoder_variant(name: str) -> DecoderVariant:
    """The row of ``--decoder-type name``; an unknown name is a one-line :class:`UsageError`."""
    return _row(DECODERS, name, "--decoder-type")


def _row(table: dict, name: str, flag: str):
    try:
        return table[name]
    except (KeyError, TypeError):
        raise UsageError(f"{flag} must be one of {', '.join(table)}, got {name!r}") from None


def logged_loss_terms(loss_type: str, decoder_points: int | None = None) -> tuple[str, ...]:
    """The ``train_loss_<term>`` names of a run: the data terms, then ``latent``.

    With ``decoder_points`` (point subsets, l2 only) the data term is the point l2.
    """
    data = ("l2",) if decoder_points is not None else loss_variant(loss_type).terms
    return (*data, LATENT_TERM)


def markdown_table() -> str:
    """The two tables as Markdown (docs/architecture.md holds this text; a test compares)."""
    lines = ["| `--loss-type` | terms (`train_loss_<term>`) | full grid | sweepable | static | |",
             "|---|---|---|---|---|---|"]
    for v in LOSSES.values():
        lines.append(f"| `{v.name}` | {', '.join(v.terms)} | {'yes' if v.full_grid else 'no'} | "
                     f"{', '.join(v.sweepable) or '-'} | {', '.join(v.static) or '-'} | "
                     f"{v.summary} |")
    lines += ["", "| `--decoder-type` | its settings | |", "|---|---|---|"]
    for d in DECODERS.values():
        lines.append(f"| `{d.name}` | {', '.join(d.settings) or '-'} | {d.summary} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
