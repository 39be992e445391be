"""Families llama.cpp runs but Tailor's exporter does not write yet (issue 17): each is refused
before anything is written, with the reason from the one capability table (the exporter and
``gguf_support``, which ``tailor model info`` reads)."""
from __future__ import annotations

import pytest

from engine.capabilities import ARCHITECTURES, UNSUPPORTED, exports_gguf, gguf_support
from engine.events import TailorError
from engine.export.gguf_export import export_gguf
from tests.conftest import edited_copy, snapshot_tree


@pytest.mark.parametrize("model_type", sorted(UNSUPPORTED))
def test_export_is_refused_with_the_reason_and_nothing_written(model_type, tiny_model,
                                                               tmp_path):
    folder = edited_copy(tiny_model("qwen3"), tmp_path / model_type,
                         config={"model_type": model_type})
    before = snapshot_tree(folder)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    with pytest.raises(TailorError) as e:
        export_gguf(folder, out, "f16")
    reason = UNSUPPORTED[model_type].reason
    assert reason in e.value.message and str(folder) in e.value.message
    assert list(out.parent.iterdir()) == []
    assert snapshot_tree(folder) == before
    assert gguf_support({"model_type": model_type}) == (False, reason)
    assert not exports_gguf(model_type)


def test_no_family_is_both_supported_and_refused():
    assert not set(UNSUPPORTED) & set(ARCHITECTURES)


@pytest.mark.parametrize("kind", ["smollm3", "granitemoe", "gpt_oss_mxfp4"])
def test_model_info_reads_the_table_for_the_new_families(kind, tiny_model):
    from engine.models.cli import model_info

    info = model_info(tiny_model(kind))
    assert info["gguf_export"] is True
    assert info["architecture"] in info["gguf_supported_architectures"]
