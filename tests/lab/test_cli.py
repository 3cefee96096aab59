"""``fae-lab serve``: one-line errors with status 2, and no JAX anywhere in the dashboards."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from fae_lab.cli import main as fae_lab_main
from lab.cli import build_parser, is_loopback
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
    assert (args.allow_remote, args.data_dir) == (False, None)


def test_an_empty_address_is_refused(tmp_path, capsys):
    assert serve_main(["--runs", str(tmp_path), "--address", ""]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith('fae-lab serve: error: --address ""') and "--allow-remote" in line
    # even with --allow-remote: the every-interface address is spelled 0.0.0.0
    assert serve_main(["--runs", str(tmp_path), "--address", " ", "--allow-remote"]) == 2
    assert "--address" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.7", "10.0.0.1", "example.org",
                                     "my-host"])
def test_a_non_loopback_address_needs_allow_remote(tmp_path, capsys, monkeypatch, address):
    monkeypatch.setattr("lab.app.serve", lambda *a, **k: pytest.fail("served"))
    assert serve_main(["--runs", str(tmp_path), "--address", address]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--address {address}: not a loopback address" in line and "--allow-remote" in line


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "::1"])
def test_loopback_addresses_are_loopback(address):
    assert is_loopback(address)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.7", "128.0.0.1", "my-host",
                                     "localhost.example.org", "::ffff:10.0.0.1"])
def test_other_addresses_are_not(address):
    assert not is_loopback(address)


def served_with(monkeypatch, argv, capsys) -> tuple[int, dict, str]:
    """``fae-lab serve ARGV`` up to the server's start: its status, serve()'s arguments, stderr."""
    seen = {}
    monkeypatch.setattr("lab.app.serve", lambda runs, **kwargs: seen.update(kwargs, runs=runs))
    code = serve_main(argv)
    return code, seen, capsys.readouterr().err


def test_allow_remote_serves_and_says_how_to_allow_origins(tmp_path, monkeypatch, capsys):
    code, seen, err = served_with(monkeypatch, ["--runs", str(tmp_path), "--address", "0.0.0.0",
                                                "--port", "0", "--allow-remote"], capsys)
    assert code == 0 and seen["address"] == "0.0.0.0"
    warning = next(line for line in err.splitlines() if "--allow-remote" in line)
    assert "launch training" in warning
    assert f"--allow-websocket-origin HOST:{seen['port']}" in warning


def test_loopback_serves_without_the_warning(tmp_path, monkeypatch, capsys):
    code, seen, err = served_with(monkeypatch, ["--runs", str(tmp_path), "--port", "0"], capsys)
    assert code == 0 and seen["address"] == "127.0.0.1"
    assert "--allow-remote" not in err and "launch training" not in err


def test_data_dir_defaults_to_the_runs_and_must_be_a_directory(tmp_path, monkeypatch, capsys):
    code, seen, _ = served_with(monkeypatch, ["--runs", str(tmp_path), "--port", "0"], capsys)
    assert code == 0 and seen["data_dir"] == tmp_path
    data = tmp_path / "data"
    data.mkdir()
    code, seen, _ = served_with(monkeypatch, ["--runs", str(tmp_path), "--port", "0",
                                              "--data-dir", str(data)], capsys)
    assert code == 0 and seen["data_dir"] == data
    for bad in (tmp_path / "nowhere", tmp_path / "file"):
        (tmp_path / "file").write_text("")
        assert serve_main(["--runs", str(tmp_path), "--data-dir", str(bad)]) == 2
        assert f"--data-dir {bad}: not a directory" in one_line(capsys.readouterr().err)


@pytest.mark.slow
def test_the_data_directory_reaches_the_launch_form(runs_dir, tmp_path):
    from lab.app import LabApp

    assert LabApp(runs_dir, data_dir=tmp_path).views["Launch"].data_dir == tmp_path
    assert LabApp(runs_dir).views["Launch"].data_dir == runs_dir  # default: the runs
    args, _ = build_parser().parse_known_args(["--runs", "r", "--data-dir", "/d"])  # panel serve
    assert args.data_dir == "/d"


@pytest.mark.slow
def test_the_dashboards_never_import_jax(runs_dir):
    """Every lab module, a whole app over real stores, and the launch form's validation (which
    runs the trainer's own parser) leave JAX unimported."""
    code = textwrap.dedent(f"""
        import sys
        import lab, lab.app, lab.cli, lab.launcher, lab.state, lab.transforms
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
