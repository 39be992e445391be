"""The Export page offers the engine's --allow-tokenizer-mismatch only where it matters: after
an export was refused because llama.cpp cannot reproduce the model's pre-tokenizer, as an
unticked checkbox whose tooltip says the risk (issue 13, item 5)."""
from __future__ import annotations

import argparse

import pytest

from engine.events import ErrorCode, Failed, TailorError

pytestmark = [pytest.mark.gui]


@pytest.fixture
def page(window, tmp_path, monkeypatch):
    """The Export page with an adapter to choose and a queue that records each job's argv
    (the worker is never started: the test reports its ending)."""
    from .conftest import recorded_submits

    page = window.pages["Export"]
    for name in ("pip", "other"):
        page.adapter_box.addItem(name, name)
    page.adapter_box.setCurrentIndex(page.adapter_box.findData("pip"))
    page.out_edit.setText(str(tmp_path / "pip.gguf"))
    page.submitted = recorded_submits(window.state.queue, monkeypatch)
    return page


def _refused(page, failed):
    page.export()
    job = page.submitted[-1]
    job.worker.failed.emit(failed)
    job.worker.ended.emit("failed")
    return job.worker.argv


def _engine_refusal(tmp_path) -> Failed:
    """The engine's own refusal of a pre-tokenizer llama.cpp lacks (two words kept as one
    piece), as the worker sends it: the page recognises the real words, not a copy."""
    from tokenizers import pre_tokenizers

    from engine.export.gguf_export import export_gguf
    from engine.tiny_models import cached_tiny_model
    from tests.export.pretok_models import (_byte_level, _split, model_with_tokenizer,
                                            rich_corpus, train_tokenizer)
    from tests.export.test_pretokenizer_refusal import WORD_PAIRS

    tok = train_tokenizer(pre_tokenizers.Sequence([_split(WORD_PAIRS), _byte_level(False)]),
                          vocab_size=3000, texts=rich_corpus())
    model = model_with_tokenizer(cached_tiny_model("llama3"), tmp_path / "word-pairs", tok)
    with pytest.raises(TailorError) as e:
        export_gguf(model, tmp_path / "m.gguf", "f32")
    return Failed(job="export", message=e.value.message, hint=e.value.hint, code=e.value.code)


def test_the_checkbox_appears_only_after_a_tokenizer_refusal_and_then_allows_it(page, tmp_path):
    assert page.allow_mismatch.isHidden() and not page.allow_mismatch.isChecked()
    refusal = _engine_refusal(tmp_path)
    argv = _refused(page, refusal)
    assert "--allow-tokenizer-mismatch" not in argv
    assert not page.allow_mismatch.isHidden() and not page.allow_mismatch.isChecked()
    text = page.banner.plain_text()
    lines = text.split("\n")
    assert lines[0].startswith("Export refused: llama.cpp has no pre-tokenizer")
    assert f"tick “{page.allow_mismatch.text()}”" in lines[1]  # within the banner's 3 lines
    assert refusal.message in lines[2]  # the engine's own words follow, whole
    assert "--allow" not in text  # the app names its checkbox, not the command-line flag
    tip = page.allow_mismatch.toolTip()
    assert "closest" in tip and "risk" in tip.lower() and "trained on" in tip

    page.allow_mismatch.setChecked(True)
    page.export()
    assert "--allow-tokenizer-mismatch" in page.submitted[-1].worker.argv


def test_any_other_failure_offers_nothing_and_keeps_the_engine_hint(page):
    _refused(page, Failed(job="export", code=ErrorCode.DISK_FULL, message="no space left",
                          hint="free 3 GB"))
    assert page.allow_mismatch.isHidden()
    assert page.banner.plain_text() == "Export failed: no space left\nfree 3 GB"


def test_choosing_another_adapter_takes_the_permission_back(page):
    _refused(page, Failed(job="export", message="m", hint="pass --allow-tokenizer-mismatch"))
    page.allow_mismatch.setChecked(True)
    page.adapter_box.setCurrentIndex(page.adapter_box.findData("other"))
    assert page.allow_mismatch.isHidden() and not page.allow_mismatch.isChecked()
    page.export()
    assert "--allow-tokenizer-mismatch" not in page.submitted[-1].worker.argv


def test_the_flag_is_one_tailor_export_accepts():
    from app.commands import export_command
    from engine.export import cli

    argv = export_command("pip", "q8_0", "/o/pip.gguf", allow_tokenizer_mismatch=True,
                          python="py")
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    ns = parser.parse_args(argv[4:-3])  # after `py -m engine export`, before the events flags
    assert ns.allow_tokenizer_mismatch and ns.adapter == "pip" and ns.quant == "q8_0"
    assert "--allow-tokenizer-mismatch" not in export_command("pip", "q8_0", "/o/p.gguf")
