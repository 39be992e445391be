"""A malformed GGUF is refused before any upload or folder write, with the file and the problem.

Pins the bug where `tailor ollama --gguf` uploaded a GGUF whose tensor offsets aliased each
other ("Created ...") and answered other corrupt files with internal messages ("index 0 is out
of bounds"). The corrupt files are made by patching the bytes of a real two-tensor GGUF.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from engine.cli import main
from engine.events import TailorError, decode_event
from engine.export.gguf_check import check_gguf
from engine.export.gguf_read import read_header

from .fake_server import FakeOllama
from .ggufs import FAMILIES


def two_tensor_gguf(path, alignment: int | None = None):
    """A qwen2 GGUF (tokens, template, file type F16) with two F16 tensors."""
    import gguf

    template, tokens, _, eos, _ = FAMILIES["qwen2"]
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_file_type(1)
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(tokens))
    w.add_eos_token_id(eos)
    w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.ones((64, 32), np.float16))
    w.add_tensor("output_norm.weight", np.ones(32, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tensor_info_offsets(path) -> dict[str, int]:
    """Byte offset of each tensor info's (type, offset) fields, found by walking the header."""
    h = read_header(path)
    data = path.read_bytes()
    out, pos = {}, h.header_bytes
    for t in reversed(h.tensors):  # each info ends with its u32 type and u64 offset
        out[t.name] = pos - 12
        pos -= 12 + 8 * len(t.shape) + 4 + 8 + len(t.name.encode())
    assert data[pos:pos + 8] == struct.pack("<Q", len(h.tensors[0].name))
    return out


def patched(path, at: int, fmt: str, value) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, at, value)
    path.write_bytes(bytes(data))


def corrupt(kind: str, path):
    two_tensor_gguf(path)
    info = tensor_info_offsets(path)
    data_off = read_header(path).tensors[1].offset
    if kind == "truncated data":
        path.write_bytes(path.read_bytes()[:-100])
        return "ends at byte"
    if kind == "truncated header":
        path.write_bytes(path.read_bytes()[:300])
        return "bytes left in the file (it is truncated or its header is corrupt)"
    if kind == "huge metadata count":
        patched(path, 16, "<Q", 1 << 60)
        return "the metadata count at offset 24 is 1152921504606846976, more than"
    if kind == "huge tensor count":
        patched(path, 8, "<Q", 1 << 40)
        return "the tensor count at offset 16 is 1099511627776, more than"
    if kind == "huge string length":
        # the first key's length (general.architecture), right after the 24-byte preamble
        patched(path, 24, "<Q", 1 << 62)
        return "the length of the key of metadata entry 0 at offset 32 is 4611686018427387904"
    if kind == "aliasing offsets":
        patched(path, info["output_norm.weight"] + 4, "<Q", 0)
        return "overlap: their data offsets alias each other"
    if kind == "offset past EOF":
        patched(path, info["output_norm.weight"] + 4, "<Q", data_off + (1 << 30))
        return "past the end of the file"
    if kind == "unaligned offset":
        patched(path, info["output_norm.weight"] + 4, "<Q", data_off + 4)
        return "not a multiple of the alignment 32"
    if kind == "unknown type":
        patched(path, info["output_norm.weight"], "<I", 99)
        return "tensor 'output_norm.weight' has unknown ggml type 99"
    if kind == "bad magic":
        patched(path, 0, "<I", 0x12345678)
        return "does not start with the GGUF magic bytes"
    if kind == "bad version":
        patched(path, 4, "<I", 7)
        return "GGUF version 7 is not supported"
    raise AssertionError(kind)


KINDS = ["truncated data", "truncated header", "huge metadata count", "huge tensor count",
         "huge string length", "aliasing offsets", "offset past EOF", "unaligned offset",
         "unknown type", "bad magic", "bad version"]


def test_the_intact_file_passes(tmp_path):
    path = two_tensor_gguf(tmp_path / "ok.gguf")
    header = check_gguf(path)
    assert [t.name for t in header.tensors] == ["token_embd.weight", "output_norm.weight"]
    check_gguf(two_tensor_gguf(tmp_path / "aligned64.gguf", alignment=64))


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupt_gguf_is_named_with_its_problem(tmp_path, kind):
    path = tmp_path / "broken.gguf"
    words = corrupt(kind, path)
    with pytest.raises(TailorError) as e:
        check_gguf(path)
    assert e.value.message.startswith(f"{path} is not a valid GGUF file: ")
    assert words in e.value.message
    assert "export it again" in e.value.hint


@pytest.mark.parametrize("kind", KINDS)
def test_ollama_uploads_nothing_for_a_corrupt_gguf(tmp_path, capsys, kind):
    path = tmp_path / "broken.gguf"
    words = corrupt(kind, path)
    before = path.read_bytes()
    with FakeOllama() as server:
        code = main(["ollama", "--gguf", str(path), "--name", "m", "--host", server.host,
                     "--modelfile-dir", str(tmp_path / "folder"), "--events", "-", "--quiet"])
        posts = [r for r in server.requests if r[0] == "POST"]
        blobs, models = dict(server.blobs), dict(server.models)
    failed = decode_event(capsys.readouterr().out.splitlines()[-1])
    assert code == 1 and failed.kind == "failed"
    assert str(path) in failed.message and words in failed.message
    assert "index" not in failed.message and "out of bounds" not in failed.message
    assert posts == [] and blobs == {} and models == {}
    assert not (tmp_path / "folder").exists()
    assert path.read_bytes() == before


def test_offline_folder_is_not_written_for_a_corrupt_gguf(tmp_path, capsys):
    path = tmp_path / "broken.gguf"
    words = corrupt("aliasing offsets", path)
    code = main(["ollama", "--gguf", str(path), "--name", "m", "--offline", "--modelfile-dir",
                 str(tmp_path / "folder"), "--events", "-", "--quiet"])
    failed = decode_event(capsys.readouterr().out.splitlines()[-1])
    assert code == 1 and words in failed.message
    assert not (tmp_path / "folder").exists()


def test_header_reader_keeps_its_api_for_export_verification(tmp_path):
    path = two_tensor_gguf(tmp_path / "ok.gguf")
    h = read_header(path)
    assert h.version == 3 and h.kv["general.architecture"] == "qwen2"
    assert h.kv_types["tokenizer.ggml.tokens"] == "ARRAY[STRING]"
    assert h.tensors[0].shape == [32, 64] and h.tensors[0].ggml_type == 1
    corrupt("huge string length", path)
    with pytest.raises(ValueError, match="more than"):
        read_header(path)
