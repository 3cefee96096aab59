"""Orbax checkpoints of the training state: ``checkpoints/`` (latest) and ``checkpoints/best``.

A checkpoint holds the :class:`~fae_lab.train.step.TrainState` pytree (parameters, Adam
moments, step, divergence flag) and a small JSON record (step, eval rows written, best
score). Restoring uses the abstract target of a freshly initialised state, so shapes and
dtypes are checked against the model the configuration builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """Latest checkpoint (and, with ``keep_best``, the best one) of one run."""

    def __init__(self, run_dir: str | Path, *, keep_best: bool):
        root = Path(run_dir).resolve() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=True)
        self.latest = ocp.CheckpointManager(root / "latest", options=options)
        self.best = ocp.CheckpointManager(root / "best", options=options) if keep_best else None

    def save(self, step: int, state: Any, record: dict[str, Any], *, best: bool = False) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))
        self.latest.save(step, args=args, force=True)
        if best and self.best is not None:
            self.best.save(step, args=args, force=True)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        step = self.latest.latest_step()
        if step is None:
            raise FileNotFoundError("no checkpoint")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        restored = self.latest.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), record=ocp.args.JsonRestore())
        )
        return restored["state"], dict(restored["record"])

    def wait(self) -> None:
        self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        if self.best is not None:
            self.best.close()
