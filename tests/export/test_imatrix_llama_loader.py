"""Opt-in: llama.cpp's own imatrix loader (common/imatrix-loader.cpp ``common_imatrix_load``,
what llama-quantize --imatrix and llama-imatrix --in-file call) compiled from the llama.cpp
sources vendored in llama-cpp-python's source distribution, reads the matrix files we write
(and the legacy .dat we read) exactly as we read them.

    TAILOR_LLAMA_CPP_SDIST=/path/to/llama_cpp_python-0.3.36.tar.gz pytest tests/export/test_imatrix_llama_loader.py

Needs g++ (a few CPU seconds: tests/export/llama_tools.py, no CMake build)."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine.export.imatrix_file import Imatrix, load_imatrix, save_imatrix

from . import llama_tools

pytestmark = pytest.mark.skipif(not llama_tools.AVAILABLE, reason=llama_tools.SKIP_REASON)


@pytest.fixture(scope="module")
def llama_loader() -> Path:
    return llama_tools.tools()["load_imatrix"]


def _llama_load(exe: Path, path: Path) -> dict | None:
    out = subprocess.run([str(exe), str(path)], capture_output=True, text=True)
    if out.returncode:
        return None
    got = {"datasets": [], "entries": {}}
    for line in out.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "meta":
            got["legacy"], got["metadata"], got["chunk_count"], got["chunk_size"] = map(
                int, rest.split())
        elif kind == "dataset":
            got["datasets"].append(rest)
        else:
            name, n, *values = rest.split()
            counts, sums = values[:int(n)], values[int(n):]
            got["entries"][name] = (np.array(counts, float), np.array(sums, np.float32))
    return got


def test_llama_cpps_loader_reads_our_gguf_as_we_do(llama_loader, tmp_path):
    rng = np.random.default_rng(0)
    im = Imatrix({"blk.0.attn_q.weight": rng.random(64, dtype=np.float32) * 50,
                  "blk.2.ffn_gate_exps.weight": rng.random(4 * 16, dtype=np.float32)},
                 {"blk.0.attn_q.weight": np.array([512.0]),
                  "blk.2.ffn_gate_exps.weight": np.array([10.0, 0.0, 3.0, 499.0])},
                 ["/data/train.jsonl"], 1, 512)
    got = _llama_load(llama_loader, save_imatrix(im, tmp_path / "m.imatrix.gguf"))
    assert got is not None
    assert (got["legacy"], got["metadata"], got["chunk_count"], got["chunk_size"]) == (0, 1, 1,
                                                                                      512)
    assert got["datasets"] == ["/data/train.jsonl"]
    assert sorted(got["entries"]) == sorted(im.sums)
    for name, (counts, sums) in got["entries"].items():
        assert counts.tolist() == im.counts[name].tolist()
        np.testing.assert_array_equal(sums, im.sums[name])


def test_llama_cpps_loader_and_ours_agree_on_a_legacy_file_and_a_damaged_one(llama_loader,
                                                                           tmp_path):
    values = (np.arange(32, dtype=np.float32) + 1) / 7
    raw = struct.pack("<i", 1) + struct.pack("<i", 19) + b"blk.0.attn_k.weight"
    raw += struct.pack("<ii", 5, 32) + values.astype("<f4").tobytes()
    raw += struct.pack("<ii", 5, 6) + b"a.text"
    legacy = tmp_path / "old.dat"
    legacy.write_bytes(raw)
    got, ours = _llama_load(llama_loader, legacy), load_imatrix(legacy)
    assert got["legacy"] == 1 and got["datasets"] == ours.datasets == ["a.text"]
    counts, sums = got["entries"]["blk.0.attn_k.weight"]
    assert counts.tolist() == ours.counts["blk.0.attn_k.weight"].tolist() == [5.0]
    np.testing.assert_array_equal(sums, ours.sums["blk.0.attn_k.weight"])
    cut = tmp_path / "cut.dat"
    cut.write_bytes(raw[:60])  # llama.cpp refuses it; so do we (test_imatrix_file.py)
    assert _llama_load(llama_loader, cut) is None
