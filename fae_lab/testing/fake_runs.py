"""Fabricated but self-consistent runs, written with the real :class:`RunStore`.

For tests, dashboard development and the dashboard benchmark, without JAX or training.

Truth: the real generator's periodic microstructures (:func:`fae_lab.data.generate.generate_microstructures`:
inclusions on the R x R torus, exact Fourier filtering û_t(n) = exp(-σ_t² |2πn|² / 2) û_0(n)),
with σ_0 = 0 (the sharp field) and σ_t growing geometrically from 1/R to 8/R.

A stylised spectral bias stands in for training. At training time τ = step / max_steps the
reconstruction keeps a fraction 1 - g(|n|, τ) of each mode of the truth,

    g(|n|, τ) = f(|n|) + (1 - f(|n|)) exp(-λ(|n|) τ),   λ(|n|) = λ_0 w(|n|) / (1 + (|n| / n_½)²),

so low |n| converge fast and high |n| slowly; ``w`` > 1 at high |n| for the H1, Fourier-weighted
and combined losses and for the RFF-output decoder (faster high-band decay; any other variant of
:mod:`fae_lab.variants` behaves as l2 / the standard decoder), and the error floor ``f`` is
higher on held-out scales. A little white noise is added. Every evaluation metric is then
computed from ``recon - truth`` of the stored samples (they are the whole "test set") as
docs/metrics.md defines them, so the identities hold exactly and anyone can recompute them
from ``reconstructions.zarr``. The logged loss terms are the run's loss's row
(``train_loss_<term>``, :func:`fae_lab.variants.logged_loss_terms`).

``python -m fae_lab.testing.fake_runs RUN_DIR --live --interval 0.5 --n-evals 40`` writes a run
over time from its own process, as training would.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fae_lab import config as cfg
from fae_lab import variants
from fae_lab.cli_util import OneLineArgumentParser, positive, run_guarded
from fae_lab.data.generate import generate_microstructures
from fae_lab.data.views import default_held_out
from fae_lab.errors import UsageError
from fae_lab.grid import radial_bin_edges, radial_bin_index, wavenumber_magnitude
from fae_lab.store.layout import (
    STATUSES,
    TRAIN_SPLIT_PREFIX,
    StoreLayout,
    eval_schedule,
    final_metrics,
    train_schedule,
)
from fae_lab.store.writer import RunStore

# High-|n| rate boost w(|n|) = 1 + (|n| / (R * c))^2 per loss / decoder: smaller c, stronger
# boost. A variant not named here gets none (it converges like l2 with the standard decoder).
_LOSS_BOOST = {"h1": 1 / 8, "fourier_weighted": 1 / 6, "combined": 1 / 10}
_DECODER_BOOST = {"rff_output": 1 / 8}
SMALLEST_SIGMA, LARGEST_SIGMA = 1.0, 8.0  # grid cells: the filtered scales' σ_t R
TRAIN_REMAINING = 0.8  # the training split keeps 1 - 0.8 g of each mode: a little better fit


def fake_sigmas(n_scales: int, resolution: int) -> np.ndarray:
    """σ = (0, then T - 1 widths geometric from 1/R to 8/R), ``(T,)`` float64."""
    filtered = (np.geomspace(SMALLEST_SIGMA, LARGEST_SIGMA, n_scales - 1) / resolution
                if n_scales > 1 else [])
    return np.concatenate([[0.0], filtered])


def evaluation_metrics(truth: np.ndarray, recon: np.ndarray, held_out: np.ndarray,
                       layout: StoreLayout) -> dict[str, np.ndarray]:
    """The evaluation metrics (docs/metrics.md) of ``recon`` against ``truth`` (both ``(S, T, R, R)``), test set = the S
    samples, averaged over the training scales (``~held_out``)."""
    R = truth.shape[-1]
    error = recon.astype(np.float64) - truth.astype(np.float64)
    error_power = np.abs(np.fft.fft2(error) / R**2) ** 2
    target_power = np.abs(np.fft.fft2(truth.astype(np.float64)) / R**2) ** 2
    n = wavenumber_magnitude(R)
    one_hot = (radial_bin_index(R, layout.n_bins)[..., None] == np.arange(layout.n_bins)).astype(
        np.float64)

    def per_bin(power):  # (S, T, R, R) -> (T, n_bins), mean over samples
        return np.einsum("styx,yxb->tb", power, one_hot) / power.shape[0]

    train = ~np.asarray(held_out, dtype=bool)
    scale_spectral, scale_target = per_bin(error_power), per_bin(target_power)
    scale_mse = (error**2).mean(axis=(0, 2, 3))
    scale_energy = (truth.astype(np.float64) ** 2).mean(axis=(0, 2, 3))
    spectral = scale_spectral[train].mean(axis=0)
    low_modes = n < layout.spectral_cutoff
    low = error_power[:, train][..., low_modes].sum(axis=-1).mean()
    high = error_power[:, train][..., ~low_modes].sum(axis=-1).mean()
    return {
        "eval_mse": scale_mse[train].mean(),
        "eval_rel_mse": scale_mse[train].sum() / scale_energy[train].sum(),
        "eval_scale_mse": scale_mse,
        "eval_scale_rel_mse": scale_mse / scale_energy,
        "eval_spectral_mse": spectral,
        "eval_spectral_target": scale_target[train].mean(axis=0),
        "eval_scale_spectral_mse": scale_spectral,
        "eval_scale_spectral_target": scale_target,
        "eval_low_freq_mse": low,
        "eval_high_freq_mse": high,
        "eval_high_freq_error_ratio": high / (low + high),
    }


class SyntheticRunWriter:
    """Writes one fabricated run evaluation by evaluation (``advance``), as training would.

    Arguments as :func:`write_synthetic_run`; the store is created at construction.
    """

    def __init__(self, run_dir: str | Path, *, loss_type: str = "l2",
                 decoder_type: str = "standard", pooling_type: str = "attention",
                 training_mode: str = "multi_scale", n_evals: int = 20, eval_every: int = 50,
                 log_every: int = 10, resolution: int = 32, n_scales: int = 4,
                 n_samples: int = 2, n_bins: int = 16, seed: int = 0, overwrite: bool = False,
                 rung: str = "fae", train_split: bool = False):
        for name, value, allowed in (("rung", rung, cfg.RUNGS),
                                     ("loss_type", loss_type, variants.loss_names()),
                                     ("decoder_type", decoder_type, variants.decoder_names()),
                                     ("pooling_type", pooling_type, cfg.POOLING_TYPES),
                                     ("training_mode", training_mode, cfg.TRAINING_MODES)):
            if value not in allowed:
                raise UsageError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        for name, value in (("n_evals", n_evals), ("eval_every", eval_every),
                            ("log_every", log_every), ("resolution", resolution),
                            ("n_scales", n_scales), ("n_samples", n_samples), ("n_bins", n_bins)):
            if value < 1:
                raise UsageError(f"{name} must be >= 1, got {value}")
        run_dir = Path(run_dir)
        self.rng = np.random.default_rng(seed)
        R, T = resolution, n_scales
        max_steps = max((n_evals - 1) * eval_every, 1)
        sigmas = fake_sigmas(T, R)
        # Single-scale runs train on scale 1 (the seed's first filtered field); every other
        # scale is held out. Multi-scale runs hold out the middle scale.
        train_index = min(1, T - 1)
        if training_mode == "single_scale":
            held_out_indices = None
            held_out = np.arange(T) != train_index
        else:
            held_out_indices = default_held_out(T)
            held_out = np.isin(np.arange(T), held_out_indices)
        run_config = cfg.RunConfig(
            output_dir=str(run_dir), max_steps=max_steps, seed=seed, wandb_name=run_dir.name,
            data=cfg.DataConfig(training_mode=training_mode, single_scale_index=train_index,
                                held_out_indices=held_out_indices,
                                generate_resolution=R, generate_n_scales=T, generate_seed=seed,
                                generate_n_samples=n_samples),
            model=cfg.ModelConfig(decoder_type=decoder_type, pooling_type=pooling_type,
                                  rung=rung),
            loss=cfg.LossConfig(loss_type=loss_type),
            eval=cfg.EvalConfig(eval_every=eval_every, log_every=log_every,
                                spectral_n_bins=n_bins, spectral_cutoff=R / 4,
                                n_reconstruction_samples=n_samples))
        k_centres, k_lower, k_upper = radial_bin_edges(R, n_bins)
        self.layout = StoreLayout(
            train_steps=train_schedule(max_steps, log_every),
            eval_steps=eval_schedule(max_steps, eval_every)[:n_evals],
            loss_terms=variants.logged_loss_terms(loss_type), scales=np.arange(T), times=sigmas**2 / 2,
            sigmas=sigmas, held_out=held_out, k_centres=k_centres, k_lower=k_lower,
            k_upper=k_upper, spectral_cutoff=R / 4, resolution=R,
            recon_samples=np.arange(n_samples), run_name=run_dir.name,
            tags=tuple(cfg.tags(run_config)))
        self.truth = generate_microstructures(n_samples, R, T, seed, sigmas=sigmas).fields
        self.config = run_config
        self._remaining_fraction = self._keep_fraction_model(loss_type, decoder_type)
        command = ["python", "-m", "fae_lab.testing.fake_runs", str(run_dir),
                   "--loss-type", loss_type, "--decoder-type", decoder_type,
                   "--pooling-type", pooling_type, "--training-mode", training_mode,
                   "--n-evals", str(n_evals), "--seed", str(seed), "--rung", rung,
                   *(["--train-split"] if train_split else [])]
        self.has_encoder = rung == "fae"
        self.train_split = train_split
        document = {"config": cfg.to_json_dict(run_config), "rung": rung,
                    "recon_split": "test" if self.has_encoder else "train"}
        self.store = RunStore.create(run_dir, self.layout, config=document,
                                     command_line=command, truth=self.truth,
                                     overwrite=overwrite)
        self.run_dir = run_dir
        self.n_written = 0
        self._last_metrics: dict | None = None  # of the last evaluation written
        self._train_curves = self._training_curves()

    def _keep_fraction_model(self, loss_type: str, decoder_type: str):
        """g(|n|, τ) per scale: ``(T, R, R)`` for a scalar τ (see the module docstring)."""
        layout = self.layout
        R = layout.resolution
        n = wavenumber_magnitude(R)
        boost = np.ones_like(n)
        for c in (_LOSS_BOOST.get(loss_type), _DECODER_BOOST.get(decoder_type)):
            if c is not None:
                boost *= 1 + (n / (R * c)) ** 2
        rate = 12.0 * boost / (1 + (n / (R / 16)) ** 2)
        floor = 0.01 + 0.05 * n / (R / math.sqrt(2))
        floors = floor + 0.15 * layout.held_out[:, None, None]

        def remaining(tau: float) -> np.ndarray:
            return floors + (1 - floors) * np.exp(-rate * tau)

        return remaining

    def _training_curves(self) -> dict[str, np.ndarray]:
        """Every training-log row at once: the noiseless error power of the training scales,
        with a few per-cent of noise, split into the loss terms."""
        layout = self.layout
        R = layout.resolution
        train = ~layout.held_out
        target_power = np.abs(np.fft.fft2(self.truth) / R**2) ** 2
        power = target_power[:, train].mean(axis=(0, 1))  # (R, R)
        n = wavenumber_magnitude(R)
        tau = layout.train_steps / layout.max_steps
        g2 = np.stack([self._remaining_fraction(t)[train].mean(axis=0) ** 2 for t in tau])
        noise = 1 + 0.05 * self.rng.standard_normal((4, tau.size))
        l2 = (g2 * power).sum(axis=(1, 2)) * noise[0]
        loss_cfg = self.config.loss
        terms = {
            "l2": l2,
            "grad": loss_cfg.lambda_grad * (g2 * power * (n / (R / 8)) ** 2).sum(axis=(1, 2))
            * noise[1],
            "fourier": (g2 * power * (1 + n / (R / 4)) ** loss_cfg.freq_weight_power)
            .sum(axis=(1, 2)) * noise[2],
            "latent": loss_cfg.beta * (1 + 20 * (1 - np.exp(-5 * tau))) * np.abs(noise[3]),
        }
        # A term of a loss this module does not know (a newly added variant) follows l2's curve.
        rows = {f"train_loss_{t}": terms.get(t, l2) for t in layout.loss_terms}
        rows["train_loss"] = np.sum([rows[f"train_loss_{t}"] for t in layout.loss_terms], axis=0)
        optim = self.config.optim
        rows["grad_norm"] = 4 * np.sqrt(rows["train_loss"]) * np.abs(noise[0])
        rows["learning_rate"] = optim.learning_rate * optim.lr_decay_rate ** (
            layout.train_steps / optim.lr_decay_steps)
        rows["wall_time"] = 0.012 * layout.train_steps
        uses_grad = "grad" in layout.loss_terms
        rows["lambda_grad"] = np.full(tau.size, loss_cfg.lambda_grad if uses_grad else 0.0)
        return rows

    @property
    def done(self) -> bool:
        return self.n_written >= self.layout.n_eval

    def reconstruction(self, eval_row: int, remaining_scale: float = 1.0) -> np.ndarray:
        """The fabricated ``recon`` of evaluation ``eval_row``, ``(S, T, R, R)`` float32;
        ``remaining_scale`` < 1 multiplies g(|n|, τ) (the training split's better fit)."""
        tau = self.layout.eval_steps[eval_row] / self.layout.max_steps
        keep = 1 - remaining_scale * self._remaining_fraction(tau)
        recon = np.fft.ifft2(np.fft.fft2(self.truth) * keep).real
        noise = np.random.default_rng([eval_row, 7]).standard_normal(recon.shape)
        return (recon + 0.01 * self.truth.std() * noise).astype(np.float32)

    def advance(self, n_evals: int = 1) -> int:
        """Write the next ``n_evals`` evaluations (each after the training rows up to its step).
        Returns the number of evaluations written so far."""
        layout = self.layout
        for _ in range(n_evals):
            if self.done:
                break
            row = self.n_written
            step = layout.eval_steps[row]
            start, stop = self.store.n_train, int(np.searchsorted(layout.train_steps, step, "right"))
            if stop > start:
                self.store.write_train_rows(
                    start, {name: v[start:stop] for name, v in self._train_curves.items()})
            recon = self.reconstruction(row)
            metrics = evaluation_metrics(self.truth, recon, layout.held_out, layout)
            if not self.has_encoder:  # no encoder: nothing unseen can be reconstructed
                metrics = {name: np.full(np.shape(v), np.nan) for name, v in metrics.items()}
            if self.train_split:
                train = evaluation_metrics(self.truth, self.reconstruction(row, TRAIN_REMAINING),
                                           layout.held_out, layout)
                metrics.update({TRAIN_SPLIT_PREFIX + name.removeprefix("eval_"): value
                                for name, value in train.items()})
            self._last_metrics = dict(metrics)  # final.json's, if this is the last row written
            metrics["eval_wall_time"] = 0.012 * step + 0.3 * (row + 1)
            self.store.write_eval(row, metrics, recon)
            self.n_written += 1
        return self.n_written

    def finish(self, status: str = "finished", message: str = "") -> None:
        """End the run: ``final.json`` from the last evaluation (finished or diverged), status."""
        if status == "diverged" and self.store.n_train < self.layout.n_train:
            row = self.store.n_train
            self.store.write_train_rows(row, {"train_loss": [math.nan], "grad_norm": [math.nan]})
            message = message or f"training loss is NaN at step {self.layout.train_steps[row]}"
        if status in ("finished", "diverged") and self.n_written:
            self.store.write_final(final_metrics(
                self._last_metrics, self.layout.scales, self.layout.held_out, self.layout.k_centres,
                step=int(self.store.progress["step"]), status=status))
        self.store.set_status(status, message)


def write_synthetic_run(run_dir: str | Path, *, loss_type: str = "l2",
                        decoder_type: str = "standard", pooling_type: str = "attention",
                        training_mode: str = "multi_scale", n_evals: int = 20,
                        eval_every: int = 50, log_every: int = 10, resolution: int = 32,
                        n_scales: int = 4, n_samples: int = 2, n_bins: int = 16,
                        status: str = "finished", seed: int = 0,
                        overwrite: bool = False, rung: str = "fae",
                        train_split: bool = False) -> Path:
    """Write a whole fabricated run to ``run_dir`` and return its path.

    ``n_evals`` evaluations every ``eval_every`` steps (max_steps = (n_evals - 1) eval_every),
    a training-log row every ``log_every`` steps. ``status="finished"`` writes every row and
    ``final.json``; ``"running"``, ``"failed"`` and ``"diverged"`` stop after half of the
    evaluations (``"diverged"`` adds a NaN loss row and ``final.json``; ``"failed"`` none).
    """
    if status not in STATUSES:
        raise UsageError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    writer = SyntheticRunWriter(
        run_dir, loss_type=loss_type, decoder_type=decoder_type, pooling_type=pooling_type,
        training_mode=training_mode, n_evals=n_evals, eval_every=eval_every,
        log_every=log_every, resolution=resolution, n_scales=n_scales, n_samples=n_samples,
        n_bins=n_bins, seed=seed, overwrite=overwrite, rung=rung, train_split=train_split)
    _play(writer, status, interval=0.0)
    return Path(run_dir)


def _play(writer: SyntheticRunWriter, status: str, interval: float) -> None:
    """Advance to the end (``finished``) or half way (otherwise), pausing ``interval`` seconds
    after each evaluation, then end the run with ``status`` (``running`` leaves it open)."""
    target = writer.layout.n_eval if status == "finished" else max(writer.layout.n_eval // 2, 1)
    while writer.n_written < target:
        writer.advance(1)
        if interval:
            time.sleep(interval)
    if status != "running":
        writer.finish(status, "synthetic failure" if status == "failed" else "")


def _parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m fae_lab.testing.fake_runs",
        description="Write a fabricated run store (optionally live, one evaluation at a time).")
    parser.add_argument("run_dir", help="the run directory to create")
    parser.add_argument("--live", action="store_true",
                        help="write one evaluation every --interval seconds")
    parser.add_argument("--interval", type=positive(float), default=0.5)
    parser.add_argument("--n-evals", type=positive(int), default=20)
    parser.add_argument("--eval-every", type=positive(int), default=50)
    parser.add_argument("--log-every", type=positive(int), default=10)
    parser.add_argument("--loss-type", choices=variants.loss_names(), default="l2")
    parser.add_argument("--decoder-type", choices=variants.decoder_names(), default="standard")
    parser.add_argument("--pooling-type", choices=cfg.POOLING_TYPES, default="attention")
    parser.add_argument("--training-mode", choices=cfg.TRAINING_MODES, default="multi_scale")
    parser.add_argument("--resolution", type=positive(int), default=32)
    parser.add_argument("--n-scales", type=positive(int), default=4)
    parser.add_argument("--n-samples", type=positive(int), default=2)
    parser.add_argument("--n-bins", type=positive(int), default=16)
    parser.add_argument("--status", choices=STATUSES,
                        default="finished", help="how the run ends")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rung", choices=cfg.RUNGS, default="fae")
    parser.add_argument("--train-split", action="store_true",
                        help="also write the training split's eval_train_* variables")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(argv) if argv is not None else None)
    options: dict[str, Any] = dict(
        loss_type=args.loss_type, decoder_type=args.decoder_type,
        pooling_type=args.pooling_type, training_mode=args.training_mode,
        n_evals=args.n_evals, eval_every=args.eval_every, log_every=args.log_every,
        resolution=args.resolution, n_scales=args.n_scales, n_samples=args.n_samples,
        n_bins=args.n_bins, seed=args.seed, overwrite=args.overwrite, rung=args.rung,
        train_split=args.train_split)

    def body() -> None:
        writer = SyntheticRunWriter(args.run_dir, **options)
        _play(writer, args.status, interval=args.interval if args.live else 0.0)

    return run_guarded("fae_lab.testing.fake_runs", body)


if __name__ == "__main__":
    sys.exit(main())
