"""Opt-in: llama.cpp's own `llama-quantize --imatrix FILE` (tools/quantize, compiled from the
sdist's sources against llama-cpp-python's libllama: tests/export/llama_tools.py) given the
matrix `tailor export --imatrix auto` saved, writes the same tensors, byte for byte, as
`tailor export --imatrix FILE` with that file, from the same F16 model; and the same
quantize.imatrix.* keys. The whole chain: our collection's file, llama.cpp's loader and
llama-quantize's weights, the encoders.

    TAILOR_LLAMA_CPP_SDIST=/path/to/llama_cpp_python-0.3.36.tar.gz pytest tests/export/test_imatrix_llama_quantize.py
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest

from engine.events import as_job
from engine.export.gguf_export import export_gguf
from engine.export.imatrix_config import ImatrixConfig
from engine.export.imatrix_source import resolve_imatrix
from engine.tiny_models import cached_tiny_model

from . import llama_tools
from .helpers import f16_copy

pytestmark = pytest.mark.skipif(not llama_tools.AVAILABLE, reason=llama_tools.SKIP_REASON)

WIDE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4}
TEXT = "\n".join(f"Line {i}: the {w} jumps over {i * 7 % 13} lazy dogs, twice." for i, w in
                 enumerate(["fox", "cat", "llama", "whale", "finch"] * 30))


def _kv(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    value = f.parts[f.data[0]]
    return bytes(value).decode() if f.types[0] == gguf.GGUFValueType.STRING else int(value[0])


@pytest.mark.parametrize("kind, quant", [("llama3", "q2_k"), ("llama3", "q3_k_m"),
                                         ("qwen3_moe", "q2_k")])
def test_llama_quantize_with_our_matrix_file_writes_our_bytes(tmp_path, kind, quant):
    m16 = f16_copy(cached_tiny_model(kind, **WIDE), tmp_path / f"{kind}-f16")
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    f16 = export_gguf(m16, tmp_path / "m-f16.gguf", "f16", verify=False).path
    ours = tmp_path / f"m-{quant}.gguf"
    matrix = resolve_imatrix(m16, ours, quant, ImatrixConfig(
        imatrix="auto", imatrix_text=str(text), imatrix_ctx=128), as_job("t", None, None))
    saved = Path(matrix.record["path"])
    # given back as a file, as a user would: read, checked, used
    given = resolve_imatrix(m16, ours, quant, ImatrixConfig(imatrix=str(saved)),
                            as_job("t", None, None))
    export_gguf(m16, ours, quant, verify=False, imatrix=given)
    reference = tmp_path / f"ref-{quant}.gguf"
    run = subprocess.run([str(llama_tools.tools()["llama-quantize"]), "--imatrix", str(saved),
                          str(f16), str(reference), quant.upper(), "2"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"loaded {len(matrix)} importance matrix entries" in run.stdout
    a, b = gguf.GGUFReader(str(ours)), gguf.GGUFReader(str(reference))
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert set(ta) == set(tb)
    types = {n: (ta[n].tensor_type.name, tb[n].tensor_type.name) for n in ta
             if ta[n].tensor_type != tb[n].tensor_type}
    assert not types, types
    differ = [n for n in ta if not np.array_equal(np.asarray(ta[n].data).view(np.uint8),
                                                  np.asarray(tb[n].data).view(np.uint8))]
    assert not differ, f"bytes differ in {differ}"
    for key in ("quantize.imatrix.file", "quantize.imatrix.dataset",
                "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count"):
        assert _kv(a, key) == _kv(b, key), key
