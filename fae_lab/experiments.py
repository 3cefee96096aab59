"""The seed's experiments, as the command lines it gives (program name and paths aside).

``SEED_COMMANDS`` are the eight commands of the seed document, flag for flag; the phase
programme (:mod:`fae_lab.phase`) runs them with their sweeps, each next to a multi-scale
baseline so that every comparison the seed asks for ("does blur disappear?", "does the
high band fall faster?") has its reference in the same table.

Phase A also runs the *bottleneck ladder* (:func:`ladder_experiments`): on the baseline's
data, decoder and step budget, the decoder alone fitted to single training samples
(:data:`LADDER_SAMPLES`), an auto-decoder (one free latent per training field, no encoder) and
the full FAE (the baseline itself). Compared on their training split, a rung that resolves far
more than the next one names the bottleneck: decoder alone >> auto-decoder, the latent;
auto-decoder >> FAE, the encoder; no rung resolving the fine scales, the decoder itself (or
the optimiser).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    name: str
    phase: str
    argv: tuple[str, ...]  # flags of `fae-lab train`, without --data-path / --output-dir
    question: str
    rung: str = "fae"  # the bottleneck ladder's rung (fae_lab.config.RUNGS)


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# The seed's eight commands (Experiments 1-7 and the combined best practice), with
# --data-path / --output-dir / --wandb-name left to the caller.
SEED_COMMANDS: dict[str, tuple[str, ...]] = {
    "phase_a_single_scale_t1": _split(
        "--training-mode single_scale --single-scale-index 1 --track-spectral-metrics "
        "--spectral-n-bins 15 --latent-dim 32 --beta 1e-4 --max-steps 50000 "
        "--wandb-project fae-spectral"
    ),
    "phase_a_high_capacity": _split(
        "--training-mode single_scale --single-scale-index 1 --latent-dim 64 --beta 1e-5"
    ),
    "phase_b_h1_lambda0.5": _split(
        "--training-mode multi_scale --loss-type h1 --lambda-grad 0.5 --track-spectral-metrics"
    ),
    "phase_b_fourier_p1": _split(
        "--training-mode multi_scale --loss-type fourier_weighted --freq-weight-power 1.0"
    ),
    "phase_b_combined": _split(
        "--training-mode multi_scale --loss-type combined --lambda-grad 0.3 --freq-weight-power 0.5"
    ),
    "phase_c_rff512_penultimate": _split(
        "--training-mode multi_scale --decoder-type rff_output --rff-dim 512 --track-spectral-metrics"
    ),
    "phase_c_multiband_4scales": _split(
        "--training-mode multi_scale --decoder-type rff_output --rff-dim 256 "
        "--rff-multiscale-sigmas 0.5,1.0,2.0,4.0"
    ),
    "combined_best": _split(
        "--training-mode multi_scale --loss-type h1 --lambda-grad 0.5 --decoder-type rff_output "
        "--rff-dim 512 --rff-multiscale-sigmas 0.5,1.0,2.0,4.0 --latent-dim 64 --beta 5e-5 "
        "--pooling-type augmented_residual --n-heads 8 --track-spectral-metrics --save-best-model"
    ),
}

BASELINE = _split("--training-mode multi_scale --loss-type l2 --decoder-type standard --track-spectral-metrics")


# Training samples (indices into the training split) the decoder-alone rung fits, one run each.
LADDER_SAMPLES = (0, 1, 2)


def ladder_experiments() -> list[Experiment]:
    """The ladder's rungs below the FAE, on the baseline's settings (the baseline is the FAE rung)."""
    runs = [Experiment(f"phase_a_ladder_decoder_alone_s{i}", "a",
                       (*BASELINE, "--rung", "decoder_alone", "--rung-sample", str(i)),
                       f"ladder: the decoder alone on training sample {i} (its own spectral bias)",
                       rung="decoder_alone")
            for i in LADDER_SAMPLES]
    runs.append(Experiment("phase_a_ladder_auto_decoder", "a", (*BASELINE, "--rung", "auto_decoder"),
                           "ladder: one free latent per training field, no encoder (what the latent allows)",
                           rung="auto_decoder"))
    return runs


def phase_experiments(phase: str) -> list[Experiment]:
    """The runs of one phase, sweeps included, baseline first."""
    base = Experiment("baseline_multi_scale", phase, BASELINE, "the reference every run is compared with")
    s = SEED_COMMANDS
    if phase == "a":
        return [
            base,
            Experiment("phase_a_single_scale_t1", "a", s["phase_a_single_scale_t1"],
                       "does blur disappear when only the first filtered scale is trained?"),
            Experiment("phase_a_high_capacity", "a", s["phase_a_high_capacity"],
                       "does a larger latent with weaker beta keep the fine detail?"),
            *ladder_experiments(),
        ]
    if phase == "b":
        runs = [base, Experiment("phase_b_h1_lambda0.5", "b", s["phase_b_h1_lambda0.5"],
                                 "does the H1 loss make the high band fall faster?")]
        for p in ("0.5", "1.0", "2.0"):
            argv = _split(f"--training-mode multi_scale --loss-type fourier_weighted --freq-weight-power {p}")
            runs.append(Experiment(f"phase_b_fourier_p{p}", "b", argv, f"Fourier-weighted loss, p = {p}"))
        runs.append(Experiment("phase_b_combined", "b", s["phase_b_combined"], "H1 + Fourier weighting"))
        return runs
    if phase == "c":
        runs = [base]
        for dim in ("256", "512", "1024"):
            argv = _split(f"--training-mode multi_scale --decoder-type rff_output --rff-dim {dim}")
            runs.append(Experiment(f"phase_c_rff{dim}_penultimate", "c", argv, f"RFF readout, {dim} features"))
        for where in ("coordinates", "both"):
            argv = _split(f"--training-mode multi_scale --decoder-type rff_output --rff-dim 512 "
                          f"--rff-location {where}")
            runs.append(Experiment(f"phase_c_rff512_{where}", "c", argv, f"RFF at the {where}"))
        runs.append(Experiment("phase_c_multiband_4scales", "c", s["phase_c_multiband_4scales"],
                               "one RFF band per sigma: coverage across all scales?"))
        return runs
    if phase == "combined":
        return [base, Experiment("combined_best", "combined", s["combined_best"],
                                 "the seed's best practices together")]
    raise ValueError(f"unknown phase {phase!r}")


PHASES = ("a", "b", "c", "combined")
