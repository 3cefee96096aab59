"""A word when a run sized for a GPU is about to train on a CPU (it is not refused).

``fae-lab train``'s defaults follow the seed: a 64 x 64 grid, attention pooling, 50,000 steps.
On a GPU that is minutes; on a small CPU a step of it takes seconds, so the run would go on for
days without a word. :func:`gpu_sized` names the settings that make a run GPU-sized,
:func:`cpu_hint` is the one line printed to stderr (and shown by the dashboards' launch form)
with the sizes ``fae-lab demo`` trains at instead, and :func:`slow_hint` the line for a run whose
measured step time makes it long whatever its settings.

JAX-free: the launch form calls it with :func:`gpu_visible` standing in for the backend.
"""

from __future__ import annotations

import os
from pathlib import Path

from fae_lab.config import RunConfig

# Above these a run is GPU-sized: points per sample R^2 (each step's encoder and decoder
# work grows with them), and steps. Attention pooling (any pooling but mean) is GPU-sized too.
GPU_RESOLUTION = 64
GPU_STEPS = 10_000


def _demo_flags() -> str:
    """The sizes `fae-lab demo` trains at on a CPU, read from fae_lab.demo so the two agree."""
    from fae_lab.demo import DEMO_DATA, DEMO_STEPS, DEMO_TRAINING

    def flag(name: str) -> str:
        return f"{name} {DEMO_TRAINING[DEMO_TRAINING.index(name) + 1]}"

    return (f"--generate-resolution {DEMO_DATA['resolution']} {flag('--pooling-type')} "
            f"{flag('--batch-size')} --max-steps {DEMO_STEPS}")


CPU_FLAGS = _demo_flags()
# A run whose measured remaining time is longer than this gets slow_hint's line.
LONG_SECONDS = 30 * 60


def gpu_sized(config: RunConfig, resolution: int | None = None) -> list[str]:
    """The settings of ``config`` that are sized for a GPU, as flags with their values.

    ``resolution``: the data's grid size R when known (a data file's); None takes the
    generated data's ``--generate-resolution`` (or nothing, for a data file not yet read).
    """
    if resolution is None and config.data.data_path is None:
        resolution = config.data.generate_resolution
    found = []
    if resolution is not None and resolution >= GPU_RESOLUTION:
        found.append(f"a {resolution}x{resolution} grid" if config.data.data_path is not None
                     else f"--generate-resolution {resolution}")
    if config.model.pooling_type != "mean":
        found.append(f"--pooling-type {config.model.pooling_type}")
    if config.max_steps >= GPU_STEPS:
        found.append(f"--max-steps {config.max_steps}")
    return found


def cpu_hint(config: RunConfig, resolution: int | None = None, prog: str = "fae-lab") -> str | None:
    """The line to print when ``config`` trains on a CPU, or None if it is CPU-sized."""
    found = gpu_sized(config, resolution)
    if not found:
        return None
    return (f"{prog}: training on the CPU with settings sized for a GPU ({', '.join(found)}); "
            f"this may run for hours or days. For a CPU try {CPU_FLAGS} (the sizes fae-lab demo "
            "trains at)")


def slow_hint(step_seconds: float, steps_left: int, prog: str = "fae-lab") -> str | None:
    """The line for a CPU run whose ``steps_left`` at the measured ``step_seconds`` take longer
    than :data:`LONG_SECONDS`, or None."""
    seconds = step_seconds * steps_left
    if seconds <= LONG_SECONDS:
        return None
    hours, minutes = divmod(round(seconds / 60), 60)
    return (f"{prog}: at the measured {step_seconds:.3g} s a step on the CPU, the {steps_left} steps "
            f"left take about {hours} h {minutes:02d} min. For a CPU try {CPU_FLAGS} (the sizes "
            "fae-lab demo trains at)")


def gpu_visible() -> bool:
    """Whether a run started from this machine would likely see a GPU, without importing JAX:
    ``JAX_PLATFORMS`` naming no GPU rules it out; otherwise an NVIDIA or ROCm device node."""
    platforms = os.environ.get("JAX_PLATFORMS", "").lower()
    if platforms and not any(p in platforms for p in ("cuda", "gpu", "rocm")):
        return False
    return Path("/dev/nvidia0").exists() or Path("/dev/kfd").exists()
