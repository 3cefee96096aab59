"""``python -m tests.slow_steps SECONDS TRAIN_ARGS...``: ``fae-lab train`` with every training
step made ``SECONDS`` slower on the device, a stand-in for a slow CPU that costs no CPU.

The step calls :func:`time.sleep` through ``jax.debug.callback`` inside the compiled step, so
a chunk of n steps takes at least ``n * SECONDS`` on the device, as on a slow machine.
"""

from __future__ import annotations

import sys
import time

from fae_lab.train import interrupt


def main(argv: list[str]) -> int:
    interrupt.record_from_start()  # as `python -m fae_lab train` does
    seconds = float(argv[0])
    import jax

    from fae_lab.train import run, step

    def slow_train_step(*args, **kwargs):
        inner = step.make_train_step(*args, **kwargs)

        def slowed(state, *rest):
            jax.debug.callback(lambda: time.sleep(seconds))
            return inner(state, *rest)

        return slowed

    run.make_train_step = slow_train_step
    from fae_lab.train.cli import main as train_main

    return train_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
