"""``fae-lab serve``: one-line errors with status 2, and no JAX anywhere in the dashboards."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from fae_lab.cli import main as fae_lab_main
from lab.cli import build_parser
from lab.cli import main as serve_main


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_a_missing_runs_directory_is_one_line_and_status_2(tmp_path, capsys):
    assert serve_main(["--runs", str(tmp_path / "nowhere")]) == 2
    assert "--runs" in one_line(capsys.readouterr().err)
    file = tmp_path / "file"
    file.write_text("")
    assert fae_lab_main(["serve", "--runs", str(file)]) == 2  # through the dispatcher
    assert "is not a directory" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv,flag", [(["--port", "70000"], "--port"),
                                       (["--port", "http"], "--port"),
                                       (["--poll-interval", "0"], "--poll-interval")])
def test_bad_flag_values_exit_2_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as caught:
        serve_main(argv)
    assert caught.value.code == 2
    assert flag in one_line(capsys.readouterr().err)


def test_a_port_in_use_is_refused(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve_main(["--runs", str(tmp_path), "--port", str(port)]) == 2
    assert f"--port {port}" in one_line(capsys.readouterr().err)


def test_defaults_bind_this_machine_only():
    args = build_parser().parse_args([])
    assert (args.address, args.port, args.runs, args.show) == ("127.0.0.1", 5006, "runs", False)


@pytest.mark.slow
def test_the_dashboards_never_import_jax(runs_dir):
    """Every lab module, a whole app over real stores, and the launch form's validation (which
    runs the trainer's own parser) leave JAX unimported."""
    code = textwrap.dedent(f"""
        import sys
        import lab, lab.app, lab.cli, lab.launcher, lab.source, lab.state, lab.transforms
        import lab.views
        from bokeh.document import Document
        from lab.app import LabApp
        from lab.launcher import form_defaults, train_argv, validate_train_argv
        app = LabApp({str(runs_dir)!r})
        for index in range(len(app.views)):
            app.tabs.active = index
        app.template.server_doc(Document())
        validate_train_argv(train_argv(form_defaults(), {str(runs_dir / "new")!r}))
        print(sorted(m for m in sys.modules if m == "jax" or m.startswith(("jax.", "jaxlib"))))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
