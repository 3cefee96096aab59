"""Orbax checkpoints of the training state: ``checkpoints/`` (latest) and ``checkpoints/best``.

A checkpoint holds the :class:`~fae_lab.train.step.TrainState` pytree (parameters, Adam
moments, step, divergence flag), a small JSON record (step, eval rows written, best score)
and the model's fixed features (``fixed``: every variable that is not a parameter, i.e. the
Fourier frequency matrices drawn once at the start; ``nnx.split(model, nnx.Param, ...)``'s
rest, as a dict of arrays). Restoring uses the abstract target of a freshly initialised state,
so shapes and dtypes are checked against the model the configuration builds.

The fixed features are restored rather than drawn again: a redraw repeats the first draw only
when the same program computes it, and a run moved to another machine, backend, JAX version
or set of XLA flags may resume under another one (a draw computed with other flags can
differ in its last bits). Checkpoints written before the features were kept have no
``fixed`` item; their runs resume with the features drawn again, as they did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

FIXED_ITEM = "fixed"  # the model's fixed features (module docstring)


class Checkpoints:
    """Latest checkpoint (and, with ``keep_best``, the best one) of one run."""

    def __init__(self, run_dir: str | Path, *, keep_best: bool):
        root = Path(run_dir).resolve() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=True)
        self.latest = ocp.CheckpointManager(root / "latest", options=options)
        self.best = ocp.CheckpointManager(root / "best", options=options) if keep_best else None

    def save(self, step: int, state: Any, record: dict[str, Any], *, fixed: dict | None = None,
             best: bool = False) -> None:
        """Save ``state``, ``record`` and (when given) ``fixed``, the model's fixed features
        as a pure dict (``nnx.State.to_pure_dict()``)."""
        items = {"state": ocp.args.StandardSave(state), "record": ocp.args.JsonSave(record)}
        if fixed:
            items[FIXED_ITEM] = ocp.args.StandardSave(fixed)
        args = ocp.args.Composite(**items)
        self.latest.save(step, args=args, force=True)
        if best and self.best is not None:
            self.best.save(step, args=args, force=True)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore_latest(self, abstract_state: Any, abstract_fixed: dict | None = None
                       ) -> tuple[Any, dict[str, Any], dict | None]:
        """The latest checkpoint's ``(state, record, fixed)`` (:func:`restore_step`)."""
        step = self.latest.latest_step()
        if step is None:
            raise FileNotFoundError("no checkpoint")
        return restore_step(self.latest, step, abstract_state, abstract_fixed)

    def wait(self) -> None:
        self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        if self.best is not None:
            self.best.close()



def shape_structs(tree: Any) -> Any:
    """``tree`` with every array replaced by its shape and dtype (an orbax restore target)."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def restore_step(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                 abstract_fixed: dict | None = None, *, record: bool = True
                 ) -> tuple[Any, dict[str, Any] | None, dict | None]:
    """Checkpoint ``step`` of ``manager`` in one restore: its state (shaped as
    ``abstract_state``), its record (None with ``record=False``) and, when ``abstract_fixed``
    is given (a pure dict of the model the configuration builds), its fixed features (None for
    a checkpoint saved before they were kept)."""
    items = {"state": ocp.args.StandardRestore(shape_structs(abstract_state))}
    if record:
        items["record"] = ocp.args.JsonRestore()
    has_fixed = bool(abstract_fixed) and (Path(manager.directory) / str(step) / FIXED_ITEM).is_dir()
    if has_fixed:
        items[FIXED_ITEM] = ocp.args.StandardRestore(shape_structs(abstract_fixed))
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return (restored["state"], dict(restored["record"]) if record else None,
            restored[FIXED_ITEM] if has_fixed else None)
