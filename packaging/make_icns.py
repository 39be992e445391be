"""Render resources/icons/tailor.svg into a macOS .icns file, on any platform.

    python packaging/make_icns.py OUT.icns [--svg resources/icons/tailor.svg]

Qt (already a dependency) renders the SVG; the .icns container is a short list of PNG entries
(Apple's "icns" format: a 4-byte type and a big-endian length per entry), so neither
rsvg-convert nor iconutil is needed and the build_macos.sh step also runs on Linux.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE_SVG = REPO / "resources" / "icons" / "tailor.svg"
# icns entry type -> pixel size of its PNG (the @2x types are the Retina variants).
ICNS_TYPES = {"icp4": 16, "icp5": 32, "icp6": 64, "ic07": 128, "ic08": 256, "ic09": 512,
              "ic10": 1024, "ic11": 32, "ic12": 64, "ic13": 256, "ic14": 512}


def render_png(svg: Path, size: int) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    _app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"make_icns: {svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buf, "PNG")
    return bytes(data)


def icns_bytes(pngs: dict[str, bytes]) -> bytes:
    body = b"".join(kind.encode("ascii") + struct.pack(">I", 8 + len(png)) + png
                    for kind, png in pngs.items())
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def make_icns(out: Path, svg: Path = SOURCE_SVG) -> Path:
    by_size = {size: render_png(svg, size) for size in sorted(set(ICNS_TYPES.values()))}
    pngs = {kind: by_size[size] for kind, size in ICNS_TYPES.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(icns_bytes(pngs))
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--svg", type=Path, default=SOURCE_SVG)
    args = p.parse_args(argv)
    print(make_icns(args.out, args.svg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
