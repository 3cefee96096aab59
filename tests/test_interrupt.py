"""SIGINT / SIGTERM recorded as a request to stop (fae_lab.train.interrupt), in a process that
runs several commands one after another, as a notebook kernel or a test session does."""

from __future__ import annotations

import os
import signal
import time

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
