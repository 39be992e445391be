"""Issue 14: layout that does not trip people up. A banner never moves the buttons below it,
the chart's top tick label is whole, an empty chart says so, memory and token counts read as
people write them."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint

from .test_screenshots import pixels, ratio
from .test_state import good_report

pytestmark = [pytest.mark.gui]


def test_a_banner_never_moves_the_buttons_below_it(qtbot):
    from app.pages.model import ModelPage
    from app.state import AppState

    page = ModelPage(AppState())
    qtbot.addWidget(page)
    page.resize(1024, 700)
    page.show()
    qtbot.waitExposed(page)
    where = lambda: (page.curated.mapTo(page, QPoint(0, 0)),  # noqa: E731
                     page.download_button.mapTo(page, QPoint(0, 0)))
    before = where()
    page.banner.show_message("error", "Could not download x: the Hugging Face Hub could not "
                             "be reached<br>check the internet connection, then press "
                             "Download again: what was fetched is kept", [("a", "Retry")])
    qtbot.wait(20)
    assert where() == before
    page.banner.show_message("ok", "Short.")
    qtbot.wait(20)
    assert where() == before
    page.banner.clear()
    qtbot.wait(20)
    assert where() == before


def test_the_charts_top_tick_label_is_not_cut_off(qtbot):
    from app.history import LossHistory
    from app.widgets import LossChart

    history = LossHistory()
    history.add_train(1, 0.0)
    history.add_train(2, 1.0)
    chart = LossChart(history)
    qtbot.addWidget(chart)
    chart.getPlotItem().getViewBox().setDefaultPadding(0)  # the top tick at the very top
    chart.resize(420, 300)
    chart.show()
    qtbot.waitExposed(chart)
    chart.refresh()
    chart.getPlotItem().getViewBox().autoRange(padding=0)
    qtbot.wait(50)
    arr = pixels(chart)
    background = arr[arr.shape[0] // 2, arr.shape[1] - 3]
    axis_width = int(chart.getAxis("left").width())
    top = arr[:2, :axis_width].reshape(-1, 3)
    assert max(ratio(px, background) for px in top) < 1.5, "a tick label is cut at the top"
    # and the label is drawn (below the edge, whole)
    strip = arr[:chart.fontMetrics().height() + 8, :axis_width].reshape(-1, 3)
    assert max(ratio(px, background) for px in strip) >= 3


def test_empty_charts_say_no_data_yet(qtbot):
    from app.history import LossHistory
    from app.widgets import LossChart

    history = LossHistory()
    chart = LossChart(history)
    qtbot.addWidget(chart)
    chart.resize(400, 300)
    chart.show()
    qtbot.waitExposed(chart)
    chart.refresh()
    assert chart._empty_label.isVisible() and chart._empty_label.text() == "No data yet"
    assert not chart.getAxis("left").style["showValues"]
    history.add_train(1, 2.5)
    chart.refresh()
    assert not chart._empty_label.isVisible() and chart.getAxis("left").style["showValues"]


def test_memory_and_token_counts_read_naturally(qtbot, tiny_model):
    from engine.events import Step

    from app.estimate import GIB, human_bytes, human_tokens
    from app.pages.data import DataPage
    from app.pages.model import describe_model
    from app.pages.train import TrainPage
    from app.state import AppState

    # engine/sizes.py's decimal units (as Finder counts), MB below a gigabyte
    assert human_bytes(13_200_000) == "13.2 MB" and human_bytes(512e6) == "512 MB"
    assert human_bytes(1.5e9) == "1.50 GB" and human_bytes(5e6) == "5.00 MB"
    assert human_bytes(0.5 * GIB) == "537 MB"  # a GiB-based figure is not shown as "512"
    assert human_tokens(134.25) == "134" and human_tokens(1250) == "1,250"
    assert "0.0 GB" not in describe_model(tiny_model("qwen2"))["memory"]
    assert " MB" in describe_model(tiny_model("qwen2"))["memory"]

    page = TrainPage(AppState())
    qtbot.addWidget(page)
    page._on_step(Step(iteration=1, total_iterations=10, peak_memory_gb=0.01))
    page.refresh()
    assert page.stat_labels["mem"].text() == "10.0 MB"  # (the engine counts 1 GB = 1e9 B)

    data = DataPage(AppState())
    qtbot.addWidget(data)
    r = good_report()
    r["train_stats"].update(length_median=30.5, length_p95=134.25, tokens=1234567)
    data.show_report(r)
    assert data.fields["lengths"].text() == "min 20, median 30, 95% 134, max 44"
    assert data.fields["tokens"].text().startswith("1,234,567 (")


def test_nothing_is_cut_off_at_1024x700(qtbot, window):
    window.resize(1024, 700)
    model = window.pages["Model"]
    window.show_page("Model")
    qtbot.wait(30)
    fm = model.curated.fontMetrics()
    room = model.curated.viewport().width()
    for i in range(model.curated.count()):
        for line in model.curated.item(i).text().splitlines():
            assert fm.horizontalAdvance(line) <= room, (line, room)
    export = window.pages["Export"]
    window.show_page("Export")
    export.set_ollama({"reachable": False, "host": "http://127.0.0.1:11434"})
    qtbot.wait(30)
    status = export.ollama_status
    assert status.heightForWidth(status.width()) <= status.height(), status.text()
    assert "Modelfile folder" in status.toolTip()


def test_library_buttons_are_whole_at_1024x700(qtbot, window):
    window.resize(1024, 700)
    library = window.pages["Library"]
    window.show_page("Library")
    qtbot.wait(30)
    for b in library.buttons.values():
        assert b.width() >= b.sizeHint().width(), b.text()
    for box in library.compare_boxes:
        assert box.width() >= box.minimumWidth()
