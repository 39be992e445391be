"""Issue 14: every page in light and dark mode at 1440x900 and 1024x700, saved for a person to
look at (test-output/screenshots/), and the colours the app sets checked on the grabbed
pixels: trained-text highlight and banner text at contrast >= 4.5, sidebar icons >= 3."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from .conftest import screenshot
from .test_state import good_report

pytestmark = [pytest.mark.gui]
SIZES = ((1440, 900), (1024, 700))


def pixels(widget) -> np.ndarray:
    """The widget as it is drawn, an (h, w, 3) RGB array."""
    image = widget.grab().toImage().convertToFormat(
        __import__("PySide6.QtGui").QtGui.QImage.Format.Format_RGB888)
    arr = np.frombuffer(image.constBits(), dtype=np.uint8,
                        count=image.sizeInBytes()).reshape(image.height(), image.bytesPerLine())
    return arr[:, :image.width() * 3].reshape(image.height(), image.width(), 3).copy()


def ratio(a, b) -> float:
    from app.widgets import contrast_ratio
    return contrast_ratio(QColor(*map(int, a)), QColor(*map(int, b)))


def text_contrast_on(arr: np.ndarray, bg: QColor, min_pixels: int = 100) -> float:
    """Contrast between ``bg`` and the strongest glyph pixel drawn inside runs of ``bg``
    (a highlight span or a banner), sampled from the image."""
    target = np.array([bg.red(), bg.green(), bg.blue()])
    is_bg = np.abs(arr.astype(int) - target).max(axis=2) <= 3
    assert is_bg.sum() >= min_pixels, f"colour {bg.name()} not found on screen"
    best = 1.0
    for y in np.nonzero(is_bg.any(axis=1))[0]:
        xs = np.nonzero(is_bg[y])[0]
        row = arr[y, xs[0]:xs[-1] + 1]
        for px in row[::1]:
            best = max(best, ratio(px, target))
    return best


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_in_light_and_dark_is_readable(qtbot, window, tiny_model, test_output,
                                                  scheme):
    from app.main import dark_palette
    from app.widgets import banner_colors, highlight_colors, luminance

    app = QApplication.instance()
    before = app.palette()
    app.setPalette(dark_palette() if scheme == "dark" else app.style().standardPalette())
    try:
        window.state.set_model(str(tiny_model("qwen2")))
        data = window.pages["Data"]
        data.show_report(good_report())
        train = window.pages["Train"]
        train._say("error", "Training failed: chat.jsonl:2: not valid JSON<br>fix the line")
        for w, h in SIZES:
            window.resize(w, h)
            for name in ("Model", "Data", "Train", "Library", "Playground", "Export"):
                window.show_page(name)
                qtbot.wait(30)
                screenshot(window, test_output, f"{scheme}-{w}x{h}-{name.lower()}")
        palette = window.palette()
        assert (luminance(palette.color(palette.ColorRole.Window)) < 0.1) == (scheme == "dark")

        window.show_page("Data")
        qtbot.wait(30)
        fg, bg = highlight_colors(data.palette())
        assert text_contrast_on(pixels(data.preview.viewport()), bg) >= 4.5

        window.show_page("Train")
        qtbot.wait(30)
        fg, bg, _ = banner_colors("error", train.palette())
        banner = pixels(train.banner)
        assert text_contrast_on(banner, bg) >= 4.5
        if scheme == "dark":  # not a light pastel box on a dark window
            assert luminance(bg) < 0.1, bg.name()

        # Sidebar icons, the selected one included: lines stand out from their background.
        sidebar = window.sidebar
        for row in (0, sidebar.currentRow()):
            rect = sidebar.visualItemRect(sidebar.item(row))
            arr = pixels(sidebar.viewport())[rect.top():rect.bottom(),
                                             rect.left():rect.left() + 40]
            flat = arr.reshape(-1, 3).astype(int)
            values, counts = np.unique(flat, axis=0, return_counts=True)
            background = values[counts.argmax()]
            assert max(ratio(px, background) for px in values) >= 3.0, (scheme, row)
    finally:
        app.setPalette(before)
