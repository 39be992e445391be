"""`tailor ollama` end to end (in-process) against the fake server, and without a server."""
from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.events import decode_event
from tests.conftest import snapshot_tree

from .fake_server import free_port
from .ggufs import make_gguf


@pytest.fixture
def gguf(tmp_path):
    """The user's GGUF in a folder of theirs (overrides tests/ollama/conftest.py's)."""
    folder = tmp_path / "user-files"
    folder.mkdir()
    return make_gguf(folder / "tuned-f16.gguf", "llama")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["ollama", *argv, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_the_run_command(server, gguf, capsys):
    code, out, _ = run(capsys, "--gguf", str(gguf), "--name", "pirate", "--host", server.host,
                       "--system", "Talk like a pirate.", "--temperature", "0.2")
    assert code == 0
    assert "Created pirate:latest in Ollama" in out and "ollama run pirate:latest" in out
    m = server.models["pirate:latest"]
    assert "<|eot_id|>" in m["parameters"]["stop"] and m["system"] == "Talk like a pirate."


def test_events_stream_ends_with_finished_result(server, gguf, capsys):
    code, out, _ = run(capsys, "--gguf", str(gguf), "--name", "m", "--host", server.host,
                       "--events", "-")
    events = [decode_event(line) for line in out.splitlines()]
    assert code == 0 and events[0].kind == "started" and events[-1].kind == "finished"
    assert events[-1].result.created is True
    assert events[-1].result.template["family"] == "llama3"
    assert any(e.kind == "progress" for e in events)


def test_no_server_writes_the_folder_and_prints_the_command(gguf, capsys, tailor_home):
    before = snapshot_tree(gguf.parent)
    code, out, _ = run(capsys, "--gguf", str(gguf), "--name", "pirate",
                       "--host", f"127.0.0.1:{free_port()}", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["created"] is False
    folder = tailor_home / "exports" / "ollama" / "pirate"
    assert result["modelfile_dir"] == str(folder)
    assert (folder / "Modelfile").is_file() and (folder / "tuned-f16.gguf").is_file()
    assert result["command"].endswith("ollama create pirate -f Modelfile")
    assert snapshot_tree(gguf.parent) == before


def test_offline_skips_the_server(server, gguf, capsys, tmp_path):
    code, out, _ = run(capsys, "--gguf", str(gguf), "--name", "m", "--host", server.host,
                       "--offline", "--modelfile-dir", str(tmp_path / "folder"))
    assert code == 0 and "ollama create m -f Modelfile" in out
    assert server.requests == [] and (tmp_path / "folder" / "Modelfile").exists()


def test_modelfile_dir_with_a_server_creates_and_writes_the_folder(server, gguf, capsys,
                                                                   tmp_path):
    folder = tmp_path / "folder"
    for attempt in range(2):  # the app sends twice to the same folder: ours, so rewritten
        code, out, _ = run(capsys, "--gguf", str(gguf), "--name", f"m{attempt}",
                           "--host", server.host, "--modelfile-dir", str(folder), "--json")
        result = json.loads(out)
        assert code == 0 and result["created"] and result["modelfile_dir"] == str(folder)
        assert f"ollama create m{attempt} -f Modelfile" in (folder / "README.txt").read_text()
    assert set(server.models) == {"m0:latest", "m1:latest"}


def test_status(server, capsys):
    code, out, _ = run(capsys, "status", "--host", server.host)
    assert code == 0 and f"Ollama {server.version}" in out
    code, out, _ = run(capsys, "status", "--host", f"127.0.0.1:{free_port()}")
    assert code == 1 and "not reachable" in out and "ollama serve" in out


@pytest.mark.parametrize("argv,words", [
    (["--name", "m"], "exactly one of --gguf FILE or --adapter NAME"),
    (["--name", "Bad Name"], "uppercase"),
    (["--name", "m", "--host", "192.168.0.9"], "not on this machine"),
    (["--name", "m", "--quant", "q3_k"], "cannot quantize to 'q3_k'"),
    (["--name", "m", "--temperature", "9"], "above the maximum"),
    (["--name", "m", "--adapter-only"], "--adapter-only goes with --adapter"),
])
def test_bad_requests_fail_clearly_before_any_upload(server, gguf, capsys, argv, words):
    if "exactly one" not in words:
        argv = ["--gguf", str(gguf), *argv]
    if "--host" not in argv:
        argv += ["--host", server.host]
    before = gguf.read_bytes()
    code, out, _ = run(capsys, *argv, "--events", "-")
    failed = [decode_event(line) for line in out.splitlines()][-1]
    assert code == 1 and failed.kind == "failed" and words in failed.message
    assert server.count("POST", "/api/blobs/") == 0 and server.models == {}
    assert gguf.read_bytes() == before


def test_collision_needs_replace_on_the_command_line(server, gguf, capsys):
    assert run(capsys, "--gguf", str(gguf), "--name", "m", "--host", server.host)[0] == 0
    code, out, _ = run(capsys, "--gguf", str(gguf), "--name", "m", "--host", server.host,
                       "--system", "changed", "--events", "-")
    assert code == 1 and "already has a model named m:latest" in out
    assert server.models["m:latest"]["system"] is None
    code, _, _ = run(capsys, "--gguf", str(gguf), "--name", "m", "--host", server.host,
                     "--system", "changed", "--replace")
    assert code == 0 and server.models["m:latest"]["system"] == "changed"


def test_unknown_adapter_is_named(server, capsys):
    code, out, _ = run(capsys, "--adapter", "nope", "--name", "m", "--host", server.host,
                       "--events", "-")
    failed = decode_event(out.splitlines()[-1])
    assert code == 1 and "no adapter named 'nope'" in failed.message


def test_stop_on_stdin_cancels_a_hung_create(server, gguf):
    """The app's path: a child process with --events -, told to stop on stdin."""
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    server.fault("create", "hang")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "ollama", "--gguf", str(gguf),
                             "--name", "m", "--host", server.host, "--events", "-", "--quiet"],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while server.count("POST", "/api/create") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=30)
    events = [decode_event(line) for line in out.splitlines()]
    assert proc.returncode == 130 and events[-1].kind == "cancelled"
    assert "creating m:latest" in events[-1].message
    assert server.models == {} and gguf.exists()


def test_no_server_with_quant_prints_ollama_create_quantize(gguf, capsys, tailor_home):
    code, out, _ = run(capsys, "--gguf", str(gguf), "--name", "small", "--quant", "q4_k_m",
                       "--offline")
    assert code == 0 and "ollama create small --quantize q4_K_M -f Modelfile" in out
    readme = (tailor_home / "exports" / "ollama" / "small" / "README.txt").read_text()
    assert "ollama create small --quantize q4_K_M -f Modelfile" in readme
