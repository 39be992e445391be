"""The project's foundations: events round-trip, library names, atomic writes, tiny models."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from engine import events as ev
from engine import library, paths
from engine.atomic import atomic_path, check_free_space
from engine.events import TailorError


def test_every_event_round_trips_through_one_json_line():
    samples = [ev.Started(job="train", config={"rank": 16}), ev.Step(job="train", iteration=3,
               train_loss=1.5), ev.Validation(val_loss=float("nan")), ev.Progress(done=1, total=2),
               ev.Checkpoint(path="/x"), ev.Log(message="hi\nthere"), ev.Finished(result={"a": 1}),
               ev.Failed(message="boom", hint="h"), ev.CancelledEvent(checkpoint="c")]
    for e in samples:
        line = e.to_json()
        assert "\n" not in line
        back = ev.decode_event(line)
        assert type(back) is type(e)
    nan = ev.decode_event(ev.Validation(val_loss=float("nan")).to_json())
    assert math.isnan(float(nan.val_loss))


def test_decode_rejects_non_event_lines():
    with pytest.raises(ValueError):
        ev.decode_event("[1, 2]")
    with pytest.raises(json.JSONDecodeError):
        ev.decode_event("{not json")


def test_tailor_home_override(tailor_home):
    assert paths.tailor_home() == tailor_home
    assert paths.adapters_dir().parent == tailor_home


@pytest.mark.parametrize("bad, why", [
    ("", "empty"), ("../evil", "path separator"), ("a/b", "path separator"),
    (".hidden", "starts with a dot"), ("x" * 65, "limit is 64"), ("a..b", "'..'"),
    ("tab\tname", "not allowed"), (" pad", "spaces"),
])
def test_bad_adapter_names_are_refused(bad, why):
    with pytest.raises(TailorError, match=why.replace("(", r"\(")):
        library.adapter_path(bad)


def test_atomic_path_never_overwrites_and_cleans_up(tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    target = tmp_path / "out.bin"
    target.write_bytes(b"precious")
    with pytest.raises(TailorError, match="already exists"):
        with atomic_path(target):
            pass
    assert target.read_bytes() == b"precious"
    new = tmp_path / "new.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(new) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert not new.exists() and list(tmp_path.iterdir()) == [target]


def test_free_space_check_names_the_folder(tmp_path):
    with pytest.raises(TailorError, match="not enough free disk space in"):
        check_free_space(tmp_path, 10_000, free_bytes_fn=lambda p: 100)


def test_tiny_models_load_in_mlx_lm(any_tiny_model):
    import mlx_lm

    kind, folder = any_tiny_model
    model, tok = mlx_lm.load(str(folder))
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text
    ids = tok.encode("Hello world 123")
    assert tok.decode(ids).strip().endswith("Hello world 123")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["eos_token_id"] in tok.eos_token_ids


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for cmd in ("train", "export", "ollama", "demo", "data"):
        assert cmd in out
