"""``fae-lab train`` / ``python -m fae_lab.train``: one run from the seed's command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fae_lab.cli_util import run_guarded
from fae_lab.train.args import parse_run_config
from fae_lab.train.output_dir import check_output_dir


def main(argv: Sequence[str] | None = None, prog: str = "fae-lab train") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        config = parse_run_config(argv, prog=prog)
        check_output_dir(config)  # refused before JAX is imported (seconds), checked again there
        from fae_lab.train.run import install_sigterm_as_interrupt, train

        install_sigterm_as_interrupt()
        result = train(config, [prog, *argv])
        print(f"{prog}: {result.status} at step {result.step}; run store: {result.run_dir}")
        return 0 if result.status in ("finished", "failed") else 1

    return run_guarded(prog, body)
