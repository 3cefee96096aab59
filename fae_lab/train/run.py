"""One training run, top to bottom: data, model, store, loop, final metrics.

The loop keeps the device busy: each host call runs ``steps_per_call`` steps in a
``lax.scan``; the next call is dispatched before the previous call's metrics are read, and
everything written to the run store goes through a background writer thread. Evaluations
run on the device at the steps of the store's evaluation schedule; a checkpoint follows
each evaluation, so a run stopped at any point resumes from its last evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fae_lab.config import RunConfig, tags, to_json_dict
from fae_lab.data.generate import generate_microstructures
from fae_lab.data.npz import MultiscaleData, load_npz
from fae_lab.data.views import resolve_scales, split_samples
from fae_lab.errors import UsageError
from fae_lab.grid import grid_coordinates
from fae_lab.losses import loss_term_names
from fae_lab.models import build_model
from fae_lab.spectral import radial_bins, resolve_cutoff
from fae_lab.store import (
    AsyncStoreWriter,
    RunStore,
    StoreLayout,
    eval_schedule,
    final_metrics,
    train_schedule,
)
from fae_lab.store.writer import package_versions
from fae_lab.train.checkpoint import Checkpoints
from fae_lab.train.evaluate import make_evaluate, prepare_eval_data
from fae_lab.train.progress import ProgressReporter
from fae_lab.train.rows import TrainRowAggregator
from fae_lab.train.step import (
    StepStatics,
    TrainData,
    TrainState,
    adam,
    hyper_from_config,
    make_chunk,
    make_train_step,
)


@dataclasses.dataclass
class RunResult:
    """What a finished (or stopped) run reports back to its caller."""

    run_dir: Path
    status: str
    step: int
    final: dict[str, Any] | None


def load_data(config: RunConfig) -> MultiscaleData:
    """The data file of ``--data-path``, or the built-in generated microstructures."""
    d = config.data
    if d.data_path is not None:
        return load_npz(d.data_path)
    return generate_microstructures(
        n_samples=d.generate_n_samples,
        resolution=d.generate_resolution,
        n_scales=d.generate_n_scales,
        seed=d.generate_seed,
    )


def check_output_dir(config: RunConfig) -> Path:
    """Refuse to clobber a run, or to resume one that is not there, before any work."""
    run_dir = Path(config.output_dir)
    has_run = (run_dir / "config.json").exists() or (run_dir / "progress.json").exists()
    if config.resume and not has_run:
        raise UsageError(f"--resume: no run in {run_dir} to resume")
    if has_run and not (config.resume or config.overwrite):
        raise UsageError(f"--output-dir: {run_dir} already holds a run (use --resume or --overwrite)")
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--output-dir: {run_dir} exists and is not a directory")
    return run_dir


_RESUME_MAY_CHANGE = {"resume", "overwrite", "stop_after_step"}


def check_resume_matches(config: RunConfig, run_dir: Path) -> None:
    """A resumed run must be the same run: refuse a changed setting, naming it."""
    import json

    stored = json.loads((run_dir / "config.json").read_text())["config"]
    current = json.loads(json.dumps(to_json_dict(config)))

    def differences(a, b, prefix=""):
        for key in sorted(set(a) | set(b)):
            if key in _RESUME_MAY_CHANGE and not prefix:
                continue
            va, vb = a.get(key), b.get(key)
            if isinstance(va, dict) and isinstance(vb, dict):
                yield from differences(va, vb, f"{prefix}{key}.")
            elif va != vb:
                yield f"{prefix}{key}", va, vb

    for name, was, now in differences(stored, current):
        flag = "--" + name.split(".")[-1].replace("_", "-")
        raise UsageError(f"--resume: {flag} was {was!r} in the stored run, now {now!r}; resume with the same settings")


def train(config: RunConfig, command_line: list[str] | None = None, *, quiet: bool = False,
          label: str = "") -> RunResult:
    """Train one run as configured; return when it finishes, diverges or is stopped."""
    run_dir = check_output_dir(config)
    if config.resume:
        check_resume_matches(config, run_dir)
    data = load_data(config)
    roles = resolve_scales(
        data, config.data.training_mode, config.data.single_scale_index, config.data.held_out_indices
    )
    train_idx, test_idx = split_samples(data.n_samples, config.data.test_fraction, config.data.split_seed)
    R, T = data.resolution, data.n_scales
    for flag, points in (("--encoder-points", config.data.encoder_points),
                         ("--decoder-points", config.data.decoder_points)):
        if points is not None and points > R * R:
            raise UsageError(f"{flag}: at most {R * R} points on a {R}x{R} grid, got {points}")
    bins = radial_bins(R, config.eval.spectral_n_bins)
    cutoff = resolve_cutoff(R, config.eval.spectral_cutoff)

    compute_dtype = jnp.bfloat16 if config.precision == "bf16" else jnp.float32
    model = build_model(config.model, R, seed=config.seed, compute_dtype=compute_dtype)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply_fn(p, x_enc, u_enc, x_dec):
        return nnx.merge(graphdef, p, rest)(x_enc, u_enc, x_dec)

    optimizer = adam()
    state = TrainState(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.asarray(0, jnp.int32),
        diverged_step=jnp.asarray(-1, jnp.int32),
    )
    training_scales = np.asarray(sorted(roles.training), np.int32)
    training_mask = np.isin(np.arange(T), training_scales)
    grid = grid_coordinates(R)
    train_data = TrainData(
        fields=jnp.asarray(data.fields[train_idx]),
        training_scales=jnp.asarray(training_scales),
        grid=jnp.asarray(grid),
    )
    n_rec = min(config.eval.n_reconstruction_samples, len(test_idx))
    eval_data = prepare_eval_data(
        data.fields[test_idx], max(config.eval.eval_batch_size, n_rec), training_mask, grid
    )

    statics = StepStatics.from_config(config, R)
    step_fn = make_train_step(statics, apply_fn, optimizer)
    hyper = hyper_from_config(config)
    key = jax.random.key(config.seed)
    evaluate = jax.jit(make_evaluate(apply_fn, bins, cutoff, n_rec))
    chunks: dict[int, Any] = {}

    def run_chunk(state, n):
        if n not in chunks:
            chunks[n] = jax.jit(make_chunk(step_fn, n), donate_argnums=(0,))
        return chunks[n](state, key, train_data, hyper)

    point_terms = config.data.decoder_points is not None
    terms = ("l2",) if point_terms else loss_term_names(config.loss.loss_type)
    layout = StoreLayout(
        train_steps=train_schedule(config.max_steps, config.eval.log_every),
        eval_steps=eval_schedule(config.max_steps, config.eval.eval_every),
        loss_terms=(*terms, "latent"),
        scales=np.arange(T, dtype=np.int64),
        times=np.asarray(data.times, np.float64),
        sigmas=np.asarray(data.sigmas if data.sigmas is not None else np.full(T, np.nan), np.float64),
        held_out=~training_mask,
        k_centres=bins.centres,
        k_lower=bins.lower,
        k_upper=bins.upper,
        spectral_cutoff=cutoff,
        resolution=R,
        recon_samples=np.asarray(test_idx[:n_rec], np.int64),
        run_name=config.wandb_name or run_dir.name,
        tags=tuple(tags(config)),
    )
    rows = TrainRowAggregator(layout.train_steps)
    record: dict[str, Any] = {"n_eval": 0, "best_rel_mse": None, "elapsed": 0.0}
    if config.resume:
        store = RunStore.open(run_dir)
        checkpoints = Checkpoints(run_dir, keep_best=config.save_best_model)
        if checkpoints.latest_step() is None:
            raise UsageError(f"--resume: {run_dir} has no checkpoint yet")
        state, record = checkpoints.restore_latest(state)
        rows.restore(record["rows"])
        store.truncate(n_train=rows.n_rows, n_eval=record["n_eval"])
    else:
        payload = {
            "config": to_json_dict(config),
            "tags": list(tags(config)),
            "command_line": list(command_line or []),
            "versions": {**package_versions(), "jax_backend": jax.default_backend()},
            "run_name": layout.run_name,
            "group": config.wandb_project,
            "n_parameters": int(sum(x.size for x in jax.tree.leaves(params))),
            "roles": {"training_scales": [int(s) for s in training_scales],
                      "held_out_scales": [int(s) for s in np.flatnonzero(~training_mask)]},
            "split": {"train": [int(i) for i in train_idx], "test": [int(i) for i in test_idx]},
            "data_source": data.source,
        }
        store = RunStore.create(
            run_dir, layout, config=payload, command_line=list(command_line or []),
            truth=np.asarray(data.fields[test_idx[:n_rec]], np.float32), overwrite=config.overwrite,
        )
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        checkpoints = Checkpoints(run_dir, keep_best=config.save_best_model)
    writer = AsyncStoreWriter(store)
    progress = ProgressReporter(config.max_steps, quiet=quiet, label=label)
    loop = _Loop(config, layout, writer, checkpoints, rows, record, progress, evaluate, eval_data,
                 run_chunk, config.stop_after_step)
    try:
        status, step, final = loop.run(state)
    except KeyboardInterrupt:
        writer.set_status("failed", f"interrupted at step {loop.step}: continue with --resume")
        writer.close()
        checkpoints.wait()
        checkpoints.close()
        progress.close()
        raise
    except BaseException as err:
        writer.set_status("failed", f"{type(err).__name__}: {err}".splitlines()[0])
        writer.close()
        checkpoints.close()
        progress.close()
        raise
    writer.close()
    checkpoints.wait()
    checkpoints.close()
    progress.close()
    return RunResult(run_dir=run_dir, status=status, step=step, final=final)


class _Loop:
    """The training loop's state between host calls (kept small and explicit)."""

    def __init__(self, config, layout, writer, checkpoints, rows, record, progress, evaluate,
                 eval_data, run_chunk, stop_after_step):
        self.config, self.layout, self.writer = config, layout, writer
        self.checkpoints, self.rows, self.record = checkpoints, rows, record
        self.progress, self.evaluate, self.eval_data = progress, evaluate, eval_data
        self.run_chunk, self.stop_after_step = run_chunk, stop_after_step
        self.step = 0
        self.last_metrics: dict[str, np.ndarray] | None = None

    def elapsed(self) -> float:
        return self.record["elapsed"] + (time.perf_counter() - self.t0)

    def run(self, state: TrainState) -> tuple[str, int, dict | None]:
        cfg = self.config
        self.t0 = time.perf_counter()
        self.step = int(state.step)
        eval_steps = [int(s) for s in self.layout.eval_steps]
        n_eval = self.record["n_eval"]
        if n_eval == 0 and eval_steps[0] == 0 and self.step == 0:
            self._evaluate(state, 0)
            n_eval = 1
        self.progress.start(self.step)
        pending = None  # (metrics of the chunk in flight, its first step)
        while self.step < cfg.max_steps:
            target = eval_steps[n_eval] if n_eval < len(eval_steps) else cfg.max_steps
            n = min(cfg.steps_per_call, target - self.step)
            state, metrics = self.run_chunk(state, n)
            if pending is not None:
                self._absorb(*pending)
            pending = (metrics, self.step)
            self.step += n
            if self.step == target:
                self._absorb(*pending)
                pending = None
                if self.rows.diverged_at is not None:
                    return self._diverged(state)
                self._evaluate(state, n_eval)
                n_eval += 1
                stop = self.stop_after_step is not None and self.step >= self.stop_after_step
                if stop or self.step == cfg.max_steps or self._due_checkpoint(self.step):
                    self._checkpoint(state, n_eval)
                if stop and self.step < cfg.max_steps:
                    self.writer.set_status("failed", f"stopped at step {self.step}: continue with --resume")
                    return "failed", self.step, None
            elif self.rows.diverged_at is not None:
                return self._diverged(state)
        final = self._final()
        self.writer.write_final(final)
        self.writer.update_progress(status="finished", step=self.step, message="")
        self.progress.finish(final)
        return "finished", self.step, final

    def _due_checkpoint(self, step: int) -> bool:
        every = self.config.checkpoint_every
        return every is None or step % every == 0

    def _absorb(self, metrics, first_step: int) -> None:
        host = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
        diverged = int(host.pop("diverged_step")[-1])
        n = len(next(iter(host.values())))
        steps = np.arange(first_step + 1, first_step + n + 1)
        if diverged >= 0:
            keep = steps <= diverged  # the step that produced NaN is logged (it is the evidence)
            host = {k: v[keep] for k, v in host.items()}
            steps = steps[keep]
            self.rows.diverged_at = diverged
        for start, block in self.rows.add(steps, host, self.elapsed()):
            self.writer.write_train_rows(start, block)
        if len(steps):
            self.progress.update(int(steps[-1]), float(host["train_loss"][-1]))

    def _evaluate(self, state: TrainState, row: int) -> None:
        metrics, recon = self.evaluate(state.params, self.eval_data)
        host = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
        host["eval_wall_time"] = np.asarray(self.elapsed())
        self.writer.write_eval(row, host, np.asarray(recon, np.float32))
        self.writer.update_progress(step=self.step)
        self.last_metrics = host
        rel = float(host["eval_rel_mse"])
        best = self.record["best_rel_mse"]
        self.is_best = math.isfinite(rel) and (best is None or rel < best)
        if self.is_best:
            self.record["best_rel_mse"] = rel
            self.record["best_step"] = self.step
        self.progress.evaluation(self.step, host)

    def _checkpoint(self, state: TrainState, n_eval: int) -> None:
        self.record.update(n_eval=n_eval, rows=self.rows.snapshot(), elapsed=self.elapsed(), step=self.step)
        self.writer.flush()  # the rows the checkpoint counts are on disk before it exists
        self.t0 = time.perf_counter()
        self.checkpoints.save(self.step, state, dict(self.record),
                              best=self.config.save_best_model and getattr(self, "is_best", False))

    def _diverged(self, state: TrainState) -> tuple[str, int, dict | None]:
        step = self.rows.diverged_at
        final = self._final("diverged") if self.last_metrics is not None else None
        if final is not None:
            self.writer.write_final(final)
        self.writer.update_progress(
            status="diverged", step=int(step),
            message=f"non-finite loss or gradient at step {step}; the last checkpoint holds the last good state",
        )
        self.progress.note(f"diverged at step {step}")
        return "diverged", int(step), final

    def _final(self, status: str = "finished") -> dict[str, Any]:
        lay = self.layout
        return final_metrics(self.last_metrics, lay.scales, lay.held_out, lay.k_centres,
                             step=self.step, status=status)


def install_sigterm_as_interrupt() -> None:
    """SIGTERM ends a run like Ctrl-C: status 'failed' with a resumable checkpoint."""
    if sys.platform != "win32":
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
