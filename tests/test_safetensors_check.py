"""Damaged safetensors (issue 11): a truncated file, a malformed header, a header length of
2^60 and overlapping tensors are refused by name, with a hint, before MLX or the exporter reads
them; every command exits 1 with the message and no traceback, and the file is unchanged."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest

from engine.cli import main
from engine.events import TailorError
from engine.models.safetensors_check import check_weight_files, read_header
from tests.train.conftest import write_toy_chat


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header: dict | bytes, data: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _overlapping(path: Path) -> bytes:
    """Layer 1's q_proj reads layer 0's bytes (same dtype and shape): MLX loads it silently."""
    header, data = _split(path)
    a = "model.layers.0.self_attn.q_proj.weight"
    b = "model.layers.1.self_attn.q_proj.weight"
    header[b]["data_offsets"] = list(header[a]["data_offsets"])
    return _join(header, data)


CORRUPTIONS = {
    "truncated": (lambda p: p.read_bytes()[:len(p.read_bytes()) // 2],
                  "(the file is truncated)"),
    "malformed header": (lambda p: _join(b'{"model.embed_tokens.weight": {"dtype": ', b"x" * 64),
                         "the header is not valid JSON"),
    "header length 2^60": (lambda p: struct.pack("<Q", 1 << 60) + p.read_bytes()[8:],
                           "the header length says 1152921504606846976 bytes"),
    "overlapping tensors": (_overlapping, "overlap"),
}


@pytest.fixture(scope="module")
def damaged_models(tmp_path_factory, tiny_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("damaged")
    out = {}
    for i, (name, (make, _)) in enumerate(CORRUPTIONS.items()):
        folder = root / f"model-{i}"
        shutil.copytree(tiny_model("qwen2"), folder)
        (folder / "model.safetensors").write_bytes(make(folder / "model.safetensors"))
        out[name] = folder
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _commands(folder: Path, tmp_path: Path) -> dict[str, list[str]]:
    data = write_toy_chat(tmp_path / "toy.jsonl", n=8)
    return {"model info": ["model", "info", str(folder)],
            "train": ["train", "--model", str(folder), "--data", str(data), "--name", "x",
                      "--iters", "1", "--batch-size", "1"],
            "generate": ["generate", "--model", str(folder), "--prompt", "hi",
                         "--max-tokens", "2"],
            "export": ["export", "--model", str(folder), "--quant", "q8_0",
                       "--out", str(tmp_path / "x.gguf")]}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_every_command_names_the_damaged_file(corruption, damaged_models, tmp_path, capsys,
                                              tailor_home):
    folder = damaged_models[corruption]
    weights = folder / "model.safetensors"
    before = _sha(weights)
    expected = CORRUPTIONS[corruption][1]
    for command, argv in _commands(folder, tmp_path).items():
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 1, (command, err)
        assert f"{weights} is not a valid safetensors file: " in err, (command, err)
        assert expected in err and "download or copy the model again" in err, (command, err)
        assert "Traceback" not in err and "out of memory" not in err, (command, err)
    assert _sha(weights) == before
    assert not (tmp_path / "x.gguf").exists()
    assert not (tailor_home / "adapters" / "x").exists()


def test_a_damaged_library_adapter_is_named(tiny_model, tmp_path, capsys):
    from engine.library import adapter_path
    from tests.export.adapters import make_library_adapter

    make_library_adapter("hurt", tiny_model("qwen2"))
    file = adapter_path("hurt") / "adapters.safetensors"
    header, data = _split(file)
    a = "model.layers.0.self_attn.q_proj.lora_a"  # same shape and dtype in every layer
    header[a.replace(".0.", ".1.")]["data_offsets"] = list(header[a]["data_offsets"])
    file.write_bytes(_join(header, data))
    before = _sha(file)
    for argv in (["generate", "--adapter", "hurt", "--prompt", "hi", "--max-tokens", "2"],
                 ["fuse", "--adapter", "hurt", "--out", str(tmp_path / "fused")],
                 ["export", "--adapter", "hurt", "--out", str(tmp_path / "a.gguf")],
                 ["export", "--adapter", "hurt", "--adapter-only",
                  "--out", str(tmp_path / "b.gguf")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert f"{file} is not a valid safetensors file: tensors" in err and "overlap" in err, \
            (argv, err)
        assert "tailor train --resume NAME" in err
        assert "Traceback" not in err
    assert _sha(file) == before
    assert not any((tmp_path / n).exists() for n in ("fused", "a.gguf", "b.gguf"))


def _file(tmp_path: Path, header, data: bytes = b"\0" * 16) -> Path:
    path = tmp_path / "w.safetensors"
    path.write_bytes(_join(header if isinstance(header, bytes) else json.dumps(header).encode(),
                           data))
    return path


def _t(dtype="F32", shape=(2, 2), offsets=(0, 16)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("header, data, problem", [
    (b'{"a": ' + json.dumps(_t()).encode() + b', "a": ' + json.dumps(_t()).encode() + b"}",
     b"\0" * 16, "the key 'a' appears twice"),
    (b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 16]}}', b"\0" * 16,
     "NaN is not a JSON number"),
    (b"[1, 2]", b"", "the header is a JSON list, not an object"),
    ({"a": _t(dtype="Q4")}, b"\0" * 16, "tensor 'a' has an unknown dtype 'Q4'"),
    ({"a": _t(shape=(2, -2))}, b"\0" * 16, "not a list of non-negative integers"),
    ({"a": _t(shape=(2, True))}, b"\0" * 16, "not a list of non-negative integers"),
    ({"a": _t(offsets=(16, 0))}, b"\0" * 16, "begin must be between 0 and end"),
    ({"a": _t(offsets=(0, 12))}, b"\0" * 16, "(16 bytes) but its data_offsets span 12 bytes"),
    ({"a": _t(offsets=(8, 24))}, b"\0" * 16, "ends at byte 24 of a data section of 16 bytes"),
    ({"__metadata__": {"format": 1}, "a": _t()}, b"\0" * 16,
     "__metadata__ is not a map of strings to strings"),
    ({"a": _t(shape=(2,), offsets=(0, 8)), "b": _t(shape=(2,), offsets=(4, 12))}, b"\0" * 16,
     "tensors 'a' (bytes 0-8) and 'b' (bytes 4-12) overlap"),
])
def test_header_problems_are_named(tmp_path, header, data, problem):
    path = _file(tmp_path, header, data)
    with pytest.raises(TailorError) as e:
        read_header(path)
    assert str(path) in e.value.message and problem in e.value.message
    assert e.value.hint


def test_a_valid_header_reads_back(tmp_path):
    path = _file(tmp_path, {"__metadata__": {"format": "mlx"}, "a": _t(shape=(2,), offsets=(0, 8)),
                            "b": _t("F16", (4,), (8, 16)), "empty": _t(shape=(0,), offsets=(8, 8))})
    h = read_header(path)
    assert h.metadata == {"format": "mlx"} and h.tensors["b"].shape == (4,)
    assert h.data_start == path.stat().st_size - 16


def test_a_file_shorter_than_the_length_field(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\1\2\3")
    with pytest.raises(TailorError, match="it is 3 bytes long"):
        read_header(path)


def test_sharded_index_must_match_the_shards(tmp_path):
    one = _file(tmp_path, {"a": _t(shape=(2,), offsets=(0, 8)), "b": _t(shape=(2,),
                                                                         offsets=(8, 16))})
    shard = one.rename(tmp_path / "model-00001-of-00001.safetensors")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": shard.name, "b": shard.name}}))
    assert set(check_weight_files([shard], [index])[shard].tensors) == {"a", "b"}
    for weight_map, problem in (
            ({"a": shard.name}, "does not list the tensor 'b'"),
            ({"a": shard.name, "b": shard.name, "c": shard.name}, "no shard holds it"),
            ({"a": shard.name, "b": "model-00002-of-00002.safetensors"}, "not in the folder")):
        index.write_text(json.dumps({"weight_map": weight_map}))
        with pytest.raises(TailorError, match=problem):
            check_weight_files([shard], [index])


def test_a_checkpoint_with_overlapping_tensors_is_not_resumed_from(tmp_path):
    import mlx.core as mx

    from engine.train.checkpoint import STATE, load_checkpoint

    step = tmp_path / "step-2"
    step.mkdir()
    (step / STATE).write_text("{}")
    mx.save_safetensors(str(step / "optimizer.safetensors"), {"m": mx.zeros((2,))})
    mx.save_safetensors(str(step / "adapters.safetensors"),
                        {"a": mx.zeros((2, 2)), "b": mx.ones((2, 2))})
    header, data = _split(step / "adapters.safetensors")
    header["b"]["data_offsets"] = list(header["a"]["data_offsets"])
    (step / "adapters.safetensors").write_bytes(_join(header, data))
    with pytest.raises(TailorError, match="tensors 'a' .* and 'b' .* overlap"):
        load_checkpoint(step)
