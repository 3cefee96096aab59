"""SIGINT / SIGTERM recorded as a request to stop (fae_lab.train.interrupt), in a process that
runs several commands one after another, as a notebook kernel or a test session does."""

from __future__ import annotations

import os
import signal
import time

import pytest

from fae_lab.cli import main as fae_lab_main
from fae_lab.train import interrupt


def _send_sigterm_and_wait() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.time() + 5
    while interrupt.requested() is None and time.time() < deadline:  # handlers run between bytecodes
        time.sleep(0.01)
    assert interrupt.requested() == signal.SIGTERM


def test_one_commands_signal_does_not_stop_the_next_command_in_the_same_process():
    original = signal.getsignal(signal.SIGTERM)
    # A training command refused before its block (fae_lab.cli.main records from the start).
    interrupt.record_from_start()
    # The next command: stopped by SIGTERM inside its block.
    with interrupt.stop_on_signals():
        _send_sigterm_and_wait()
    assert interrupt.requested() is None  # nothing left for the command after it
    assert signal.getsignal(signal.SIGTERM) is original  # the handlers from before record_from_start
    with interrupt.stop_on_signals():
        assert interrupt.requested() is None


def test_early_signals_count_and_an_inner_block_sees_the_outer_ones():
    original = signal.getsignal(signal.SIGTERM)
    interrupt.record_from_start()
    _send_sigterm_and_wait()  # during the command's imports, before its block
    with interrupt.stop_on_signals():
        assert interrupt.requested() == signal.SIGTERM
        with interrupt.stop_on_signals():  # a phase's block around its runs' own
            assert interrupt.requested() == signal.SIGTERM
        assert interrupt.requested() == signal.SIGTERM
    assert interrupt.requested() is None
    assert signal.getsignal(signal.SIGTERM) is original


@pytest.mark.parametrize("argv", [["phase", "b", "--parallel-groups", "0"], ["sweep", "--grid", "bogus=1"],
                                  ["phase", "zz"], ["train", "--loss-type", "h9"]])
def test_a_training_command_refused_in_this_process_leaves_ctrl_c_as_it_was(argv, capsys):
    """``fae_lab.cli.main`` records signals from a training command's start; a command refused
    before its block (argparse, or a check before training) gives the handlers back, so a
    notebook or shell that called it still stops on Ctrl-C."""
    original = signal.getsignal(signal.SIGINT)
    try:
        status = fae_lab_main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    assert status == 2 and capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is original
    assert signal.getsignal(signal.SIGTERM) is not interrupt._record
