"""The streamed export: pieces encoded side by side in threads, written in file order."""
from __future__ import annotations

import pytest

from engine.events import TailorError
from engine.export import write as writer  # the streamed writer (issue 13: its own module)
from engine.export.gguf_export import export_gguf
from engine.tiny_models import cached_tiny_model

from .helpers import f16_copy, nan_copy


@pytest.mark.parametrize("kind", ["llama3", "qwen2"])
def test_file_bytes_do_not_depend_on_threads_pieces_or_how_far_encoding_runs_ahead(
        kind, tmp_path, monkeypatch):
    # llama3: Q/K are permuted whole (one piece); qwen2: biases. 64 wide: Q5_0/Q8_0 fallbacks.
    m16 = f16_copy(cached_tiny_model(kind), tmp_path / "m16")
    first = export_gguf(m16, tmp_path / "a.gguf", "q4_k_m", verify=False, threads=1)
    monkeypatch.setattr(writer, "PIECE_ELEMS", 100)  # one or two rows a piece
    monkeypatch.setattr(writer, "AHEAD_BYTES", 1)  # the writer waits on every piece
    monkeypatch.setattr(writer, "AHEAD_PIECES", 1)
    second = export_gguf(m16, tmp_path / "b.gguf", "q4_k_m", verify=False, threads=3)
    assert {t["type"] for t in first.tensors} >= {"Q5_0", "Q8_0"}
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    assert second.tensors == first.tensors


def test_pieces_cover_every_row_once_in_file_order(tiny_model):
    from engine.export.architectures import arch_info
    from engine.export.safetensors_stream import list_tensors
    from engine.models.load import read_config

    folder = tiny_model("llama3")
    a = arch_info(read_config(folder), str(folder))
    planned = writer.plan_tensors(a, list_tensors(folder), "q8_0")
    pieces = writer.plan_pieces(a, planned, piece_elems=200)
    assert [p.tensor.name for p in pieces if p.last] == [t.name for t in planned]
    for t in planned:
        mine = [p for p in pieces if p.tensor is t]
        rows = t.shape[0] if len(t.shape) > 1 else 1
        assert [(p.row0, p.row1) for p in mine] == list(zip(
            [0] + [p.row1 for p in mine[:-1]], [p.row1 for p in mine]))
        assert mine[-1].row1 == rows and sum(p.nbytes for p in mine) == t.nbytes
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            assert len(mine) == 1  # llama's Q/K permutation needs the whole tensor


def test_nan_weights_are_refused_naming_the_tensor_and_nothing_is_left(tmp_path):
    model = tmp_path / "model"
    name = nan_copy(cached_tiny_model("qwen2"), model)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(TailorError, match=f"{name} cannot be written as Q8_0: Q8_0: row 5 "
                                          "holds a NaN"):
        export_gguf(model, out_dir / "m.gguf", "q8_0", verify=False)
    assert list(out_dir.iterdir()) == []
