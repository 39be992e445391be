"""Issue 21 on the Export page: the engine's type table (the same types, bits and uses as
`tailor export --list-types`), each type's expected size for the adapter's model from the
engine's plan, the types already exported for the adapter with their measured quality, and
the warning (with the reason) for Q2_K/Q3_K without an importance matrix."""
from __future__ import annotations

import pytest

from engine.adapter_exports import record_export
from engine.cli import main as cli_main
from engine.events import decode_event
from engine.export.quant_types import QUANT_TYPES, imatrix_warning
from engine.library import adapter_path, write_manifest
from engine.results import ExportQuality

from .conftest import recorded_submits, screenshot

pytestmark = [pytest.mark.gui]


def _adapter(name: str, base: str = "/nowhere/base"):
    folder = adapter_path(name)
    folder.mkdir(parents=True)
    (folder / "adapters.safetensors").write_bytes(b"weights")
    write_manifest(folder, {"name": name, "status": "finished",
                            "base_model": {"path": base}, "dataset": {}, "settings": {}})
    return folder


QUALITY = {"q8_0": ExportQuality(measured=True, kl_mean=1.71e-05, kl_median=1.4e-05,
                                 kl_p99=5.2e-05, kl_max=5.5e-05, perplexity=1.37292,
                                 reference_perplexity=1.37295, same_top=1.0, tokens=35,
                                 examples=5, text="validation split of toy.jsonl",
                                 reference="MLX, the fused model with float32 weights",
                                 runtime="llama.cpp with every layer on the CPU"),
           "q2_k": ExportQuality(measured=True, kl_mean=0.0913, kl_median=0.05, kl_p99=0.6,
                                 kl_max=0.7, perplexity=2.4081, reference_perplexity=1.37295,
                                 same_top=0.8, tokens=35, examples=5,
                                 text="validation split of toy.jsonl", reference="MLX")}


def _exported(folder, tmp_path) -> None:
    for quant, size, seconds in (("q8_0", 2000, 1.04), ("q2_k", 900, 3.5)):
        f = tmp_path / f"pip-{quant}.gguf"
        f.write_bytes(b"G" * size)
        record_export(folder, f, quant=quant, kind="model", seconds=seconds,
                      quality=QUALITY[quant].to_dict(),
                      imatrix="/data/pip.imatrix.gguf" if quant == "q2_k" else "")
    f = tmp_path / "pip-old.gguf"  # an export from before quality was measured
    f.write_bytes(b"G" * 10)
    record_export(folder, f, quant="q4_0", kind="model")


@pytest.fixture
def page(window, tmp_path, monkeypatch):
    """The Export page on adapter "pip" with three exports listed; jobs are recorded, never
    started (the test ends them)."""
    _exported(_adapter("pip"), tmp_path)
    page = window.pages["Export"]
    page.submitted = recorded_submits(window.state.queue, monkeypatch)
    window.show_page("Export")
    page.select_adapter("pip")
    page.out_edit.setText(str(tmp_path / "out.gguf"))
    return page


def test_the_cli_and_the_page_list_the_same_types(page, tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    assert cli_main(["export", "--list-types", "--events", str(events)]) == 0
    capsys.readouterr()
    listed = [decode_event(line) for line in events.read_text().splitlines()
              if '"finished"' in line][-1].result.types
    box = page.quant_box
    assert [box.itemData(i) for i in range(box.count())] == [t.name for t in listed]
    for i, t in enumerate(listed):  # each entry: the type, its use; the tooltip its bits
        assert box.itemText(i).startswith(t.name.upper()) and box.itemText(i).endswith(t.use)
        assert f"~{t.bits_per_weight:g} bits per weight" in box.itemData(i, 3)  # ToolTipRole
    box.setCurrentIndex(box.findData("iq4_xs"))
    assert page.quant_use.text() == "~4.25 bits per weight: 4-bit non-linear grid, smaller " \
                                    "than Q4_K_S at similar quality"


def test_the_exported_types_are_listed_with_their_quality(page):
    table = page.exported
    rows = [[table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())]
    assert rows == [["Q8_0", "2.00 KB", "1.71e-05", "1.373", "1.0 s", "pip-q8_0.gguf"],
                    ["Q2_K + imatrix", "900 B", "0.0913", "2.408", "3.5 s", "pip-q2_k.gguf"],
                    ["Q4_0", "10 B", "–", "–", "–", "pip-old.gguf"]]
    assert page.results_tabs.tabText(0) == "Exported for this adapter (3)"
    kl_tip = table.item(0, 2).toolTip()
    assert "over 35 tokens of validation split of toy.jsonl" in kl_tip
    assert "99th percentile 5.2e-05" in kl_tip and "same top token on 100.0%" in kl_tip
    assert "Measured with llama.cpp with every layer on the CPU" in kl_tip
    assert "Measured with" not in table.item(1, 2).toolTip()  # a record from before the field
    assert table.item(1, 3).toolTip().startswith("2.4081 (full precision: 1.3729) on 35")
    assert table.item(2, 2).toolTip() == "exported without llama.cpp verification"
    assert "KL divergence" in table.horizontalHeaderItem(2).toolTip()
    assert table.item(1, 0).toolTip() == "q2_k, quantized with the importance matrix " \
                                         "/data/pip.imatrix.gguf"


def test_q2_k_and_q3_k_without_an_importance_matrix_show_the_warning_and_reason(page):
    box, banner = page.quant_box, page.imatrix_banner
    box.setCurrentIndex(box.findData("q4_k_m"))
    assert banner.isHidden()
    for quant in ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l"):
        box.setCurrentIndex(box.findData(quant))
        assert not banner.isHidden() and banner.kind == "warn"
        assert banner.plain_text().startswith(imatrix_warning(quant))  # the engine's reason
        assert "From the training data" in banner.plain_text()
    page.export()
    assert "--imatrix" not in page.submitted[-1].worker.argv

    page.imatrix_box.setCurrentIndex(page.imatrix_box.findData("auto"))
    assert banner.isHidden()
    page.export()
    argv = page.submitted[-1].worker.argv
    assert argv[argv.index("--imatrix") + 1] == "auto" and "q3_k_l" in argv

    page.set_imatrix_file("/data/my.imatrix.gguf")  # as the file dialog would
    assert page.imatrix_box.currentText() == "File: my.imatrix.gguf" and banner.isHidden()
    page.export()
    argv = page.submitted[-1].worker.argv
    assert argv[argv.index("--imatrix") + 1] == "/data/my.imatrix.gguf"

    page.adapter_only.setChecked(True)  # an adapter file is not quantized with a matrix
    assert not page.imatrix_box.isEnabled() and banner.isHidden()
    page.adapter_only.setChecked(False)
    page.imatrix_box.setCurrentIndex(page.imatrix_box.findData(""))
    assert not banner.isHidden()


def test_each_type_shows_the_size_the_engine_plans_for_the_adapters_model(window, tiny_model,
                                                                        qtbot):
    from app.estimate import human_bytes
    from engine.export.cli import list_types

    base = tiny_model("llama3")
    _adapter("sized", str(base))
    page = window.pages["Export"]
    window.show_page("Export")
    page.select_adapter("sized")
    qtbot.waitUntil(lambda: str(base) in page.sizes, timeout=60000)  # a real worker answered
    want = {t.name: t.expected_bytes for t in list_types(base).types}
    assert page.sizes[str(base)] == want, page.quant_box.toolTip()  # (the failure, if any)
    box = page.quant_box
    for i in range(box.count()):
        name = box.itemData(i)
        assert box.itemData(i, page.quant_box.SHORT) == f"{name.upper()} · " \
                                                         f"{human_bytes(want[name])}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_page_with_its_table_and_warning_in_light_and_dark(qtbot, window, tmp_path,
                                                               test_output, scheme):
    from PySide6.QtWidgets import QApplication

    from app.main import dark_palette

    app = QApplication.instance()
    before = app.palette()
    app.setPalette(dark_palette() if scheme == "dark" else app.style().standardPalette())
    try:
        _exported(_adapter("pip"), tmp_path)
        page = window.pages["Export"]
        window.show_page("Export")
        page.select_adapter("pip")
        page.quant_box.setCurrentIndex(page.quant_box.findData("q3_k_m"))
        for w, h in ((1440, 900), (1024, 700)):
            window.resize(w, h)
            qtbot.wait(50)
            screenshot(window, test_output, f"export-quality-{scheme}-{w}x{h}")
            # nothing cut off: the table's rows and the warning lie inside the window
            table = page.exported
            bottom = table.mapTo(window, table.rect().bottomLeft()).y()
            assert bottom < window.height()
            assert table.visualItemRect(table.item(2, 0)).bottom() <= \
                table.viewport().height()
            assert page.imatrix_banner.label.heightForWidth(page.imatrix_banner.label.width()) \
                <= page.imatrix_banner.height()
    finally:
        app.setPalette(before)
