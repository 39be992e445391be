"""The fast metadata packing writes gguf-py's bytes, and the header reader reads them back."""
from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType as V

from engine.export.gguf_read import read_header
from engine.export.gguf_write import FastGGUFWriter, pack_array

WORDS = ["", "a", "Ġthe", "▁piece", "<|im_end|>", "日本語", "🧵", "x" * 300, "\n\t ", "é"]


def _gguf_py_bytes(values, sub_type=None) -> bytes:
    w = gguf.GGUFWriter(None, "llama")
    return w._pack_val(values, V.ARRAY, add_vtype=False, sub_type=sub_type)


@pytest.mark.parametrize("values,sub_type", [
    ([WORDS[i % len(WORDS)] + str(i) * (i % 3) for i in range(500)], None),
    ([(-1) ** i * i * 4099 for i in range(500)] + [2 ** 31 - 1, -2 ** 31], None),
    ([0.0, -0.0, 1e-45, 3.4e38, -1e4, float("nan"), float("inf"), 0.1] * 40, None),
    (list(range(300)), V.UINT32),
    (list(range(300)), V.INT64),
    ([0.5 * i for i in range(300)], V.FLOAT64),
])
def test_bulk_packing_equals_gguf_py(values, sub_type):
    packed = pack_array(values, sub_type)
    assert packed is not None
    assert packed == _gguf_py_bytes(values, sub_type)


@pytest.mark.parametrize("values,sub_type", [
    ([True, False] * 100, None),  # bools: gguf-py's own packing
    ([1, 2.0] * 100, None),  # mixed: gguf-py raises
    ([2 ** 31] * 100, None),  # does not fit INT32: gguf-py raises
    ([1e39] * 100, None),  # does not fit FLOAT32: gguf-py raises
    ([1.5] * 100, V.INT32),  # float items for an integer type
])
def test_unusual_arrays_are_left_to_gguf_py(values, sub_type):
    assert pack_array(values, sub_type) is None


def _write(writer_class, path, tokens):
    w = writer_class(str(path), "llama")
    w.add_token_list(tokens)
    w.add_token_types([(i % 6) + 1 for i in range(len(tokens))])
    w.add_token_scores([-float(i) / 7 for i in range(len(tokens))])
    w.add_token_merges([f"{t} {t}" for t in tokens[:1000]])
    w.add_tensor("t", np.arange(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_file_is_byte_identical_to_gguf_py_and_reads_back(tmp_path):
    tokens = [WORDS[i % len(WORDS)] + f"{i}" for i in range(3000)]
    _write(gguf.GGUFWriter, tmp_path / "plain.gguf", tokens)
    _write(FastGGUFWriter, tmp_path / "fast.gguf", tokens)
    assert (tmp_path / "fast.gguf").read_bytes() == (tmp_path / "plain.gguf").read_bytes()
    kv = read_header(tmp_path / "fast.gguf").kv
    assert kv["tokenizer.ggml.tokens"] == tokens
    assert kv["tokenizer.ggml.merges"][-1] == f"{tokens[999]} {tokens[999]}"


def test_header_reader_crosses_its_buffer_refills(tmp_path):
    # ~8 MB of strings: more than the reader's 4 MiB refills, strings split across them
    tokens = [WORDS[i % len(WORDS)] * (1 + i % 4) + f"{i}" for i in range(80_000)]
    _write(FastGGUFWriter, tmp_path / "big.gguf", tokens)
    header = read_header(tmp_path / "big.gguf")
    assert header.kv["tokenizer.ggml.tokens"] == tokens
    assert header.kv["tokenizer.ggml.token_type"][-1] == (79_999 % 6) + 1
    assert [t.name for t in header.tensors] == ["t"]
