"""The Export page's layout (s5): its panels start right under the page's header at 1024x700
and 1440x900, in light and dark, and a message (the page's banner, the importance-matrix
warning) moves none of its buttons. The banner's room, kept above the panels whether or not
it showed, was an empty band there at 1024x700."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint

from .conftest import screenshot

pytestmark = [pytest.mark.gui]

SIZES = ((1024, 700), (1440, 900))
THREE_LINES = ("Export failed: the GGUF could not be written: no space left on the disk "
               "that holds the exports folder<br>free some space, or choose another folder "
               "under Save as, then press Write GGUF again<br>nothing of the adapter changed")


def _top(widget, page) -> int:
    return widget.mapTo(page, QPoint(0, 0)).y()


def _buttons(page) -> list:
    return [page.export_button, page.cancel_button, page.send_button, page.reveal_button,
            page.copy_button, page.lmstudio_button, page.results_tabs.tabBar()]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_panels_start_under_the_header_and_a_message_moves_no_button(
        qtbot, window, test_output, scheme):
    from PySide6.QtWidgets import QApplication

    from app.main import dark_palette

    app = QApplication.instance()
    before = app.palette()
    app.setPalette(dark_palette() if scheme == "dark" else app.style().standardPalette())
    page = window.pages["Export"]
    window.show_page("Export")
    header = page.layout().itemAt(0).widget()
    panels = (page.adapter_box.parentWidget(), page.send_button.parentWidget())
    try:
        for w, h in SIZES:
            page.banner.clear()
            page.quant_box.setCurrentIndex(page.quant_box.findData("q3_k_m"))
            page.imatrix_box.setCurrentIndex(page.imatrix_box.findData("auto"))  # no warning
            window.resize(w, h)
            qtbot.wait(50)
            screenshot(window, test_output, f"export-layout-{scheme}-{w}x{h}")
            header_bottom = _top(header, page) + header.height()
            for panel in panels:  # no blank line's worth of room above the panels
                gap = _top(panel, page) - header_bottom
                assert 0 <= gap < page.fontMetrics().lineSpacing(), (panel.title(), gap, w, h)
            where = [(b.mapTo(page, QPoint(0, 0)), b.size()) for b in _buttons(page)]

            page.banner.show_message("error", THREE_LINES)
            page.imatrix_box.setCurrentIndex(page.imatrix_box.findData(""))  # the warning
            qtbot.wait(50)
            screenshot(window, test_output, f"export-layout-{scheme}-{w}x{h}-messages")
            assert page.banner.isVisible() and page.imatrix_banner.isVisible()
            moved = [b for b, was in zip(_buttons(page), where)
                     if (b.mapTo(page, QPoint(0, 0)), b.size()) != was]
            # (the warning sits above the results, so their tab bar moves for it alone)
            assert moved == [page.results_tabs.tabBar()], moved
            # both messages whole, inside the page, above the footer's buttons
            for banner in (page.banner, page.imatrix_banner):
                label = banner.label
                assert label.heightForWidth(label.width()) <= banner.height()
            assert _top(page.banner, page) + page.banner.height() <= _top(page.reveal_button,
                                                                           page)
            # and the results table still shows a few rows
            table = page.exported
            assert table.viewport().height() >= 3 * table.verticalHeader().defaultSectionSize()
    finally:
        app.setPalette(before)


def test_the_banner_alone_moves_nothing(qtbot, window):
    page = window.pages["Export"]
    window.show_page("Export")
    window.resize(1024, 700)
    qtbot.wait(50)
    where = [b.mapTo(page, QPoint(0, 0)) for b in _buttons(page)]
    page.banner.show_message("ok", "Verified: pip-q4_k_m.gguf (13.2 MB) loads and matches "
                             "the trained model. Next: Send to Ollama.")
    qtbot.wait(30)
    assert [b.mapTo(page, QPoint(0, 0)) for b in _buttons(page)] == where
    page.banner.clear()
    qtbot.wait(30)
    assert [b.mapTo(page, QPoint(0, 0)) for b in _buttons(page)] == where
