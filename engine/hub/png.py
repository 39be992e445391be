"""The loss curve as a PNG, drawn with the standard library (zlib) alone: the model card needs
one small chart, not a plotting library in every install. Train loss blue, validation orange,
on light grid lines; the numbers themselves are in the card's text."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

WHITE, GRID, AXIS = (255, 255, 255), (225, 225, 225), (90, 90, 90)
TRAIN, VALID = (31, 119, 180), (255, 127, 14)


class Canvas:
    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(WHITE) * (width * height))

    def dot(self, x: int, y: int, color, size: int = 1) -> None:
        for dy in range(-(size // 2), size - size // 2):
            for dx in range(-(size // 2), size - size // 2):
                px, py = x + dx, y + dy
                if 0 <= px < self.width and 0 <= py < self.height:
                    i = 3 * (py * self.width + px)
                    self.pixels[i:i + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color, size: int = 1) -> None:
        """Bresenham's line, ``size`` pixels wide."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, color, size)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def png(self) -> bytes:
        rows = b"".join(b"\x00" + bytes(self.pixels[3 * y * self.width:3 * (y + 1) * self.width])
                        for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (struct.pack(">I", len(data)) + kind + data
                    + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def loss_curve_png(train: list, valid: list, width: int = 640, height: int = 320) -> bytes:
    """PNG bytes of the ``[[step, loss], ...]`` series; raises ValueError when both are empty."""
    series = [(list(s), c) for s, c in ((train, TRAIN), (valid, VALID)) if s]
    points = [p for s, _ in series for p in s]
    if not points:
        raise ValueError("no loss values to draw")
    left, right, top, bottom = 40, width - 16, 16, height - 28
    steps = [float(p[0]) for p in points]
    losses = [float(p[1]) for p in points]
    s0, s1 = min(steps), max(steps)
    l0, l1 = min(losses), max(losses)
    if s1 == s0:
        s1 = s0 + 1
    if l1 == l0:
        l0, l1 = l0 - 0.5, l1 + 0.5
    c = Canvas(width, height)
    for k in range(5):  # horizontal grid lines at fifths of the loss range
        y = top + round((bottom - top) * k / 4)
        c.line(left, y, right, y, GRID)
    c.line(left, top, left, bottom, AXIS)
    c.line(left, bottom, right, bottom, AXIS)

    def xy(p) -> tuple[int, int]:
        return (left + round((float(p[0]) - s0) / (s1 - s0) * (right - left)),
                bottom - round((float(p[1]) - l0) / (l1 - l0) * (bottom - top)))

    for points_, color in series:
        prev = None
        for p in points_:
            here = xy(p)
            if prev is not None:
                c.line(*prev, *here, color, size=2)
            elif len(points_) == 1:
                c.dot(*here, color, size=5)
            prev = here
    return c.png()


def write_loss_curve(path: Path, train: list, valid: list) -> Path:
    path.write_bytes(loss_curve_png(train, valid))
    return path
