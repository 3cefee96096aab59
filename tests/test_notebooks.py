"""The walkthrough notebooks (notebooks/*.py, jupytext pairs): in step with their .ipynb, and
executed end to end in a real Jupyter kernel, every cell, at a test budget.

Each notebook runs with nbclient in a kernel of the venv's own Python: a kernelspec written
for the test module that runs ``sys.executable``, found first through ``JUPYTER_PATH`` (a
user's own ``python3`` kernelspec pointing elsewhere does not change what is tested). A cell
inserted after the ``parameters`` cell (papermill's convention) sets ``RUNS_DIR`` to a fresh
temporary directory and, for the executions, :data:`TEST_BUDGET`: fewer steps than the
notebooks' defaults at a fixed number of steps a host call, the same experiments, seeds,
data and cells. The kernels share the session's JAX compilation cache (tests/conftest.py;
every phase trains the same baseline).
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"  # the executed notebooks, for a look
KERNEL = "fae-lab-tests"  # a kernelspec running this Python (the venv's), see venv_kernel
NOTEBOOKS = ("phase_a_bottleneck", "phase_b_losses", "phase_c_decoders", "combined_config")


def cells(notebook) -> list[tuple[str, str, tuple[str, ...]]]:
    """What a notebook says: each cell's type, source and tags (outputs and ids aside)."""
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


# The executions' budget, injected after the parameters: the defaults' 200 steps with an
# evaluation every 50 cost minutes of CPU per notebook, most of it training steps; 20 steps
# evaluated at 0, 10 and 20 run every cell the same way (training, a curve of three
# evaluations, the conclusions, the NTK, the dashboard, the report). Ten steps a host call:
# on the CPU the call length is otherwise sized from the measured step time (1, 1, then a
# power of two and the remainder before each evaluation), and every new length is one more
# XLA compilation of the training program, which is most of a notebook's time at this budget;
# one length is one compilation per group, and the four notebooks' baselines (the same flags)
# share theirs through the session's compilation cache. The CPU's measured call length stays
# tested end to end by the launch-form browser tests, whose runs have no --steps-per-call.
TEST_BUDGET = 'MAX_STEPS = 20\nTRAIN_FLAGS = [*TRAIN_FLAGS, "--eval-every", "10", "--steps-per-call", "10"]'


def with_runs_dir(notebook, runs_dir: Path, budget: str | None = None):
    """A copy of ``notebook`` with ``RUNS_DIR = runs_dir`` (then ``budget``'s lines, if
    given) injected after its parameters cell."""
    notebook = nbformat.from_dict(notebook)
    index = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", ()))
    injected = nbformat.v4.new_code_cell("\n".join(filter(None, [f"RUNS_DIR = {str(runs_dir)!r}", budget])))
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(index + 1, injected)
    return notebook


def test_every_phase_has_a_notebook_pair():
    found = sorted(p.stem for p in (ROOT / "notebooks").glob("*.py"))
    assert found == sorted(NOTEBOOKS)
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_ipynb_matches_its_py_source(name):
    source = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    committed = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert cells(committed) == cells(source), f"notebooks/{name}.ipynb is stale: run `make notebooks`"
    nbformat.validate(committed)
    assert not any(c.get("outputs") for c in committed.cells), "commit the .ipynb without outputs"
    tagged = [c for c in source.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(tagged) == 1 and "RUNS_DIR" in tagged[0].source and "GPU" in tagged[0].source


def test_the_injected_runs_dir_follows_the_parameters(tmp_path):
    notebook = with_runs_dir(jupytext.read(ROOT / "notebooks" / "combined_config.py"), tmp_path)
    index = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", ()))
    assert notebook.cells[index + 1].source == f"RUNS_DIR = {str(tmp_path)!r}"
    budgeted = with_runs_dir(jupytext.read(ROOT / "notebooks" / "combined_config.py"), tmp_path, TEST_BUDGET)
    assert budgeted.cells[index + 1].source.splitlines() == [f"RUNS_DIR = {str(tmp_path)!r}",
                                                             *TEST_BUDGET.splitlines()]
    # The injected cell overrides what the parameters cell set (a later --eval-every wins).
    defaults, values = {}, {}
    exec(notebook.cells[index].source, defaults)
    exec(notebook.cells[index].source + "\n" + budgeted.cells[index + 1].source, values)
    assert defaults["MAX_STEPS"] > 20 and values["MAX_STEPS"] == 20
    assert values["TRAIN_FLAGS"] == [*defaults["TRAIN_FLAGS"], "--eval-every", "10", "--steps-per-call", "10"]
    assert values["SEEDS"] == defaults["SEEDS"] and values["ONLY"] == defaults["ONLY"]


@pytest.fixture(scope="module", autouse=True)
def venv_kernel(tmp_path_factory):
    """Register :data:`KERNEL` (``sys.executable -m ipykernel_launcher``) for this module."""
    share = tmp_path_factory.mktemp("jupyter")
    spec = share / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fae-lab tests", "language": "python"}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(share), os.environ.get("JUPYTER_PATH")])))
        yield KERNEL


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (the kernel, once shut down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_end_to_end(name, tmp_path, capsys):
    runs = tmp_path / "runs"
    notebook = with_runs_dir(jupytext.read(ROOT / "notebooks" / f"{name}.py"), runs, TEST_BUDGET)
    env = {**os.environ, "JAX_PLATFORMS": "cpu",  # the session's JAX compilation cache included
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=1500,
                            resources={"metadata": {"path": str(tmp_path)}})
    t0, cpu0 = time.perf_counter(), _children_cpu()
    try:
        client.execute(env=env)
    except CellExecutionError as err:
        pytest.fail(f"{name}: a cell failed:\n{str(err)[-3000:]}")
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, ARTIFACTS / f"{name}.ipynb")
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    with capsys.disabled():
        print(f"\n{name}: executed in {seconds:.0f} s wall, {cpu:.0f} s CPU of its kernel")
    text = "\n".join(out.get("text", "") for c in notebook.cells if c.cell_type == "code"
                     for out in c.get("outputs", ()) if out.get("output_type") == "stream")
    # The runs are where the test put them, finished, and the conclusions were computed.
    assert (runs / "ranking.csv").is_file()
    # At least one computed comparison sentence: " - A vs B, statistic: ... [sig|n.s.|-]".
    assert re.search(r"^ - \S+ vs \S+, .+ \[(sig|n\.s\.|-)\]$", text, re.MULTILINE), text[-2000:]
    assert "trained in" in text
    if name.startswith("phase_c"):  # the kernel section: every experiment's NTK, its share printed
        assert (runs / "baseline_multi_scale_s0" / "ntk.zarr" / "zarr.json").is_file()
        assert re.search(r"^\S+ has [0-9.]+x the baseline's high-\|n\| share", text, re.MULTILINE), text[-2000:]
    # The dashboard's views were displayed (Panel's notebook output).
    assert any("application/vnd.holoviews_load.v0+json" in out.get("data", {}) or
               "application/vnd.holoviews_exec.v0+json" in out.get("data", {})
               for c in notebook.cells for out in c.get("outputs", ()))


@pytest.mark.slow
def test_the_conclusion_cell_fails_without_stores(tmp_path):
    """The conclusions cell run on an empty runs directory raises (it never concludes from
    nothing)."""
    notebook = with_runs_dir(jupytext.read(ROOT / "notebooks" / "combined_config.py"), tmp_path / "empty")
    # Keep the set-up cells, drop the dashboard and training, keep the conclusions.
    conclusions = next(i for i, c in enumerate(notebook.cells) if "rank_stores(" in c.source)
    setup = next(i for i, c in enumerate(notebook.cells) if "import panel" in c.source)
    notebook.cells = [*notebook.cells[: setup + 1], notebook.cells[conclusions]]
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with pytest.raises(CellExecutionError, match="NoStores"):
        client.execute(env=env)


PUSH_PROBE = (
    # Count what Panel sends over the displayed dashboard's comm (panel.io.notebook.send).
    """import panel as pn
import panel.io.notebook as notebook_io

pn.extension()
sent = []
_send = notebook_io.send


def counting_send(comm, msg):
    sent.append(msg.header_json + msg.content_json)
    _send(comm, msg)


notebook_io.send = counting_send""",
    """from lab.notebook import NotebookDashboard

dashboard = NotebookDashboard(RUNS_DIR, views=("Curves",), poll_seconds=0.2)
dashboard""",
    """import time

from panel.io.state import state

from fae_lab.testing.fake_runs import SyntheticRunWriter


class OpenComm:  # the page's end of the comm, opened once JupyterLab has rendered the output
    def send(self, *args, **kwargs):
        pass


for _view, _root, _doc, comm in state._views.values():  # headless, no page opens it
    comm._comm = OpenComm()


def streamed():
    return sum("ColumnsStreamed" in m for m in sent)


during = []


def train(report):
    writer = SyntheticRunWriter(RUNS_DIR + "/a", n_evals=6, resolution=16, n_bins=8)
    for i in range(6):
        writer.advance(1)  # no progress report: the bar and status line push nothing meanwhile
        time.sleep(0.8)
    during.append(streamed())  # pushed by the notebook's thread while this one trained
    writer.finish()


dashboard.train(train)
print("STREAMED_DURING", during[0], "STREAMED_AFTER", streamed())""",
)


@pytest.mark.slow
def test_the_dashboard_pushes_rows_over_its_comm_while_training(tmp_path):
    """In a real kernel, the displayed views' new rows go out over the notebook comm while
    the training thread still runs (what makes them live in JupyterLab). Headless, no page
    opens the comm, so the probe opens it with a stand-in for the page's end."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(f"RUNS_DIR = {str(tmp_path / 'runs')!r}"),
                      *(nbformat.v4.new_code_cell(source) for source in PUSH_PROBE)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)
    text = "".join(out.get("text", "") for out in notebook.cells[-1].outputs)
    words = text.split()
    during, after = int(words[words.index("STREAMED_DURING") + 1]), int(words[words.index("STREAMED_AFTER") + 1])
    # Six evaluations written 0.8 s apart, polled every 0.2 s: several streamed before the end.
    assert during >= 2 and after >= during, text
