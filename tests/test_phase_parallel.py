"""``fae-lab phase --parallel-groups N``: a phase's groups in child processes, N at once."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from fae_lab import phase_parallel
from fae_lab.errors import UsageError
from fae_lab.phase import main as phase_main
from fae_lab.train import interrupt
from tests.train_helpers import assert_one_line_refusal, read_json, run_cli, write_tiny_data

# A stand-in child: records when it ran, on which device slot, and whether a signal stopped it.
FAKE_CHILD = textwrap.dedent("""
    import json, os, signal, sys, time
    spec = json.load(open(sys.argv[1]))
    out = os.environ["FAKE_OUT"]
    name = spec["runs"][0][0]
    stopped = []
    signal.signal(signal.SIGTERM, lambda *a: stopped.append(1))
    start = time.time()
    seconds = float(os.environ.get("FAKE_SECONDS", "1.0"))
    if os.environ.get("FAKE_PER_RUN"):  # a group's time grows with its runs, as a vmapped group's does
        seconds *= len(spec["runs"])
    while time.time() - start < seconds and not stopped:
        time.sleep(0.02)
    record = {"start": start, "end": time.time(), "slot": os.environ["CUDA_VISIBLE_DEVICES"],
              "stopped": bool(stopped), "runs": [n for n, _ in spec["runs"]]}
    open(os.path.join(out, name + ".json"), "w").write(json.dumps(record))
    sys.exit(143 if stopped else int(os.environ.get("FAKE_EXIT", "0")))
""")


@pytest.fixture
def fake_children(tmp_path, monkeypatch):
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD)
    out = tmp_path / "records"
    out.mkdir()
    monkeypatch.setattr(phase_parallel, "CHILD_COMMAND", (sys.executable, str(script)))
    monkeypatch.setenv("FAKE_OUT", str(out))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def records():
        return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}

    return records


GROUPS = [[("g0_s0", ["--x"]), ("g0_s1", ["--x"])], [("g1", ["--y"])], [("g2", ["--z"])]]


def test_at_most_n_groups_run_at_once_each_on_its_own_slot(fake_children):
    assert phase_parallel.train_groups_in_parallel(GROUPS, 2, quiet=True) == []
    records = fake_children()
    assert set(records) == {"g0_s0", "g1", "g2"} and records["g0_s0"]["runs"] == ["g0_s0", "g0_s1"]
    # The first two started together on slots 0 and 1; the third waited for a free slot.
    first, second, third = (records[k] for k in ("g0_s0", "g1", "g2"))
    assert {first["slot"], second["slot"]} == {"0", "1"}
    assert first["start"] < second["end"] and second["start"] < first["end"]  # they overlapped
    assert third["start"] >= min(first["end"], second["end"]) - 0.05
    for t in (first["start"], second["start"], third["start"]):  # never three at once
        assert sum(r["start"] <= t < r["end"] for r in records.values()) <= 2


def test_slots_follow_the_callers_cuda_visible_devices(fake_children, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert phase_parallel.device_slots(2) == ["3", "5"]
    assert phase_parallel.train_groups_in_parallel(GROUPS[:2], 2, quiet=True) == []
    assert {r["slot"] for r in fake_children().values()} == {"3", "5"}
    with pytest.raises(UsageError, match="names only 2 device"):
        phase_parallel.device_slots(3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert phase_parallel.device_slots(3) == ["0", "1", "2"]


def test_a_failing_group_is_named_and_the_others_still_train(fake_children, monkeypatch):
    monkeypatch.setenv("FAKE_EXIT", "1")
    monkeypatch.setenv("FAKE_SECONDS", "0.1")
    failures = phase_parallel.train_groups_in_parallel(GROUPS, 2, quiet=True)
    assert len(failures) == 3 and "group 2 (g1) failed with exit status 1" in failures
    assert set(fake_children()) == {"g0_s0", "g1", "g2"}


def test_a_signal_is_forwarded_to_the_running_groups_and_no_other_starts(fake_children, monkeypatch):
    monkeypatch.setenv("FAKE_SECONDS", "30")
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    with interrupt.stop_on_signals():
        timer.start()
        started = time.time()
        with pytest.raises(interrupt.Interrupted) as stopped:
            phase_parallel.train_groups_in_parallel(GROUPS, 2, quiet=True)
    assert stopped.value.exit_code == 143 and time.time() - started < 10
    records = fake_children()
    assert set(records) == {"g0_s0", "g1"}  # the third group never started
    assert all(r["stopped"] for r in records.values())


def test_the_costliest_group_starts_first_and_ties_keep_the_phase_order(fake_children, monkeypatch):
    monkeypatch.setenv("FAKE_SECONDS", "0.4")
    monkeypatch.setenv("FAKE_PER_RUN", "1")
    # Phase b's shape: small groups first in the phase, the big sweep third.
    groups = [[("a", ["--a"])], [("b", ["--b"])], [("c_s0", ["--c"]), ("c_s1", ["--c"]), ("c_s2", ["--c"])],
              [("d", ["--d"])]]
    assert phase_parallel.train_groups_in_parallel(groups, 2, quiet=True) == []
    r = fake_children()
    # The 3-run group (1.2 s) starts at once beside a, and b waits for a slot. (In the phase's
    # order c would have waited for a or b to end.)
    assert r["c_s0"]["start"] < r["a"]["end"] and r["a"]["start"] < r["c_s0"]["end"]
    assert r["b"]["start"] >= min(r["a"]["end"], r["c_s0"]["end"]) - 0.05
    for t in (r["a"]["start"], r["b"]["start"], r["c_s0"]["start"], r["d"]["start"]):  # two at most
        assert sum(x["start"] <= t < x["end"] for x in r.values()) <= 2
    # Costs given by the caller win over the number of runs.
    for record in Path(os.environ["FAKE_OUT"]).glob("*.json"):
        record.unlink()
    assert phase_parallel.train_groups_in_parallel(groups, 1, quiet=True, costs=[1, 5, 2, 1]) == []
    r = fake_children()
    assert [k for k, _ in sorted(r.items(), key=lambda kv: kv[1]["start"])] == ["b", "c_s0", "a", "d"]
    with pytest.raises(ValueError, match="2 costs for 4 groups"):
        phase_parallel.train_groups_in_parallel(groups, 1, quiet=True, costs=[1, 2])


def test_a_bad_parallel_groups_value_is_one_line_and_exit_2():
    for value in ("0", "-1", "two"):
        assert_one_line_refusal(run_cli("phase", "b", "--parallel-groups", value), "--parallel-groups")


@pytest.mark.slow
def test_parallel_groups_give_the_same_runs_as_one_after_another(tmp_path):
    """Real children on the CPU: the same stores' numbers as the serial path, and the ranking."""
    data = write_tiny_data(tmp_path / "d.npz")
    finals = {}
    for mode, extra in (("serial", []), ("parallel", ["--parallel-groups", "2"])):
        runs = tmp_path / mode
        argv = ["b", "--runs", str(runs), "--data-path", str(data), "--max-steps", "6", "--quiet",
                "--only", "phase_b_h1_lambda0.5", *extra,
                "--", "--batch-size", "4", "--eval-every", "3", "--steps-per-call", "3"]
        assert phase_main(argv) == 0
        finals[mode] = {name: read_json(runs / name / "final.json")
                        for name in ("baseline_multi_scale", "phase_b_h1_lambda0.5")}
        assert (runs / "ranking.csv").read_text().count("\n") == 3
    for name, serial in finals["serial"].items():
        parallel = finals["parallel"][name]
        assert parallel["final/step"] == serial["final/step"] == 6
        for key in ("final/test_rel_mse", "final/spectral/high_freq_mse"):
            assert parallel[key] == pytest.approx(serial[key], rel=1e-5, abs=1e-9), (name, key)
