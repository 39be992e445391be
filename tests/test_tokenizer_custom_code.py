"""A tokenizer ``auto_map`` in tokenizer_config.json sent transformers down its remote-code path
(issue 11): "Do you wish to run the custom code? [y/N]" on the terminal, the folder's Python file
run on 'y', a hang on an open pipe (the app's worker has one as stdin) and a traceback with
stdin closed. Every command loads tokenizers through engine/models/tokenizer.py, which refuses
such a folder up front, saying why, and never executes or prompts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import TailorError
from engine.models.tokenizer import load_hf_tokenizer, load_tokenizer, refuse_custom_code
from tests.conftest import DELETE, REPO, edited_copy, snapshot_tree

CODE = "tokenization_evil.EvilTokenizer"
MESSAGE = "the tokenizer asks for custom code (auto_map AutoTokenizer: " + CODE


def _custom_tokenizer_folder(source: Path, folder: Path, marker: Path, *,
                             legacy_list: bool = False) -> Path:
    shutil.copytree(source, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "EvilTokenizer"
    cfg["auto_map"] = [CODE, CODE] if legacy_list else {"AutoTokenizer": [CODE, CODE]}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    # proof if it were ever imported: the module writes the marker file
    (folder / "tokenization_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    return folder


@pytest.fixture
def evil_model(tiny_model, tmp_path) -> tuple[Path, Path]:
    """A tiny Llama 3 whose tokenizer_config.json asks for the folder's own tokenizer class
    (model type llama: transformers takes the remote-code path for it)."""
    marker = tmp_path / "code-ran"
    return _custom_tokenizer_folder(tiny_model("llama3"), tmp_path / "evil", marker), marker


def _chat_file(path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"question {i}"},
                          {"role": "assistant", "content": f"answer {i}"}]} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _commands(folder: Path, tmp_path: Path) -> dict[str, list[str]]:
    data = _chat_file(tmp_path / "chat.jsonl")
    return {
        "data check": ["data", "check", str(data), "--model", str(folder)],
        "train": ["train", "--model", str(folder), "--data", str(data), "--name", "evil-run",
                  "--iters", "2", "--batch-size", "2"],
        "generate": ["generate", "--model", str(folder), "--prompt", "hi", "--max-tokens", "2"],
        "export": ["export", "--model", str(folder), "--quant", "f32",
                   "--out", str(tmp_path / "evil.gguf")],
    }


def _run(argv: list[str], stdin: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    kwargs: dict = {"stdin": subprocess.PIPE} if stdin == "open pipe" else {
        "stdin": subprocess.DEVNULL, "preexec_fn": lambda: os.close(0)}  # closed, not /dev/null
    with subprocess.Popen([sys.executable, "-m", "engine", *argv], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kwargs) as proc:
        try:
            # the pipe stays open and unwritten: a prompt waiting on it would hang here
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"tailor {' '.join(argv[:2])} hung with stdin an {stdin}:\n{err[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.parametrize("stdin", ["open pipe", "closed stdin"])
@pytest.mark.parametrize("command", ["data check", "train", "generate", "export"])
def test_every_command_refuses_custom_tokenizer_code(command, stdin, evil_model, tmp_path,
                                                     tailor_home):
    folder, marker = evil_model
    before = snapshot_tree(folder)
    result = _run(_commands(folder, tmp_path)[command], stdin)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert MESSAGE in text, text
    assert "Tailor does not run code from a model folder" in text
    assert "use a model folder with a standard tokenizer" in text  # the hint
    assert "Traceback" not in text
    assert "Do you wish to run the custom code" not in text
    assert not marker.exists()
    assert snapshot_tree(folder) == before
    assert not (tmp_path / "evil.gguf").exists()
    assert not (tailor_home / "adapters" / "evil-run").exists()


def test_loader_refuses_before_transformers_sees_it(evil_model, monkeypatch):
    """The check comes first: transformers is never asked (it would look for the class)."""
    import transformers

    folder, marker = evil_model

    def never(*a, **k):  # pragma: no cover - reached only if the refusal were missing
        raise AssertionError("transformers was asked to load a custom-code tokenizer")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    for load in (load_tokenizer, load_hf_tokenizer, refuse_custom_code):
        with pytest.raises(TailorError) as e:
            load(folder)
        assert MESSAGE in e.value.message and str(folder / "tokenizer_config.json") in \
            e.value.message
        assert "standard tokenizer" in e.value.hint
    assert not marker.exists()


def test_legacy_list_auto_map_is_refused(tiny_model, tmp_path):
    folder = _custom_tokenizer_folder(tiny_model("qwen2"), tmp_path / "m", tmp_path / "ran",
                                      legacy_list=True)
    with pytest.raises(TailorError, match="asks for custom code"):
        load_tokenizer(folder)
    assert not (tmp_path / "ran").exists()


def test_config_json_auto_map_tokenizer_without_a_class_is_refused(tiny_model, tmp_path):
    """Without tokenizer_class, transformers takes the tokenizer from config.json's auto_map."""
    folder = edited_copy(tiny_model("llama3"), tmp_path / "m",
                         tokenizer_config={"tokenizer_class": DELETE},
                         config={"auto_map": {"AutoTokenizer": [CODE, None]}})
    with pytest.raises(TailorError) as e:
        load_hf_tokenizer(folder)
    assert str(folder / "config.json") in e.value.message and CODE in e.value.message


def test_unknown_class_without_tokenizer_json_is_refused(tiny_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model("llama2"), folder)
    (folder / "tokenizer.json").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "MyOwnTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(TailorError) as e:
        load_tokenizer(folder)
    assert "tokenizer class 'MyOwnTokenizer' is not part of transformers" in e.value.message


def test_unknown_class_with_tokenizer_json_loads_from_it(tiny_model, tmp_path):
    """No code to run and a tokenizer.json to read: loaded from the file, as it describes."""
    folder = edited_copy(tiny_model("llama3"), tmp_path / "m",
                         tokenizer_config={"tokenizer_class": "MyOwnTokenizer"})
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok = load_tokenizer(folder)
    assert tok.encode("Hello 12345 world") == ref.encode("Hello 12345 world").ids


def test_malformed_tokenizer_config_names_file_and_line(tiny_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model("qwen2"), folder)
    (folder / "tokenizer_config.json").write_text('{\n  "tokenizer_class": "X",\n  oops\n}')
    with pytest.raises(TailorError) as e:
        load_tokenizer(folder)
    assert e.value.message.startswith(f"{folder / 'tokenizer_config.json'}:3: not valid JSON")
