"""``fae-lab train`` / ``python -m fae_lab.train``: one run from the seed's command line.

Exit status: 0 finished (also ``--resume`` of a run that had already finished: one line
says so and nothing on disk changes) or stopped by ``--stop-after-step``; 1 diverged;
2 bad input; 130 / 143 after SIGINT / SIGTERM (the run is ``failed`` with a checkpoint of
its last completed step, or nothing was written if it had not started).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fae_lab.cli_util import run_guarded
from fae_lab.train import interrupt
from fae_lab.train.output_dir import check_output_dir


def main(argv: Sequence[str] | None = None, prog: str = "fae-lab train") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        from fae_lab.train.args import parse_run_config

        config = parse_run_config(argv, prog=prog)
        check_output_dir(config)  # refused before JAX is imported (seconds), checked again there
        from fae_lab.train.run import train

        result = train(config, [prog, *argv])
        message = f": {result.message}" if result.message else ""
        print(f"{prog}: {result.status} at step {result.step}{message}; run store: {result.run_dir}")
        signum = interrupt.requested()
        if signum is not None:  # after the run ended (it may have finished meanwhile)
            return 128 + signum
        return 0 if result.status in ("finished", "failed") else 1

    with interrupt.stop_on_signals():
        return run_guarded(prog, body)
