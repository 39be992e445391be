"""The project's own packaging metadata: a first `make run` prints no setuptools banner."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

APPLY_PYPROJECT = """
from setuptools.dist import Distribution
from setuptools.config.pyprojecttoml import apply_configuration
apply_configuration(Distribution(), "pyproject.toml")
"""


def test_pyproject_metadata_raises_no_setuptools_warning():
    # `-W error` turns any SetuptoolsDeprecationWarning (e.g. `project.license` as a table,
    # deprecated since setuptools 77) into a failure; the build backend applies the same code.
    proc = subprocess.run([sys.executable, "-W", "error", "-c", APPLY_PYPROJECT], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Warning" not in proc.stderr


def test_the_app_icon_is_a_valid_icns_rendered_from_the_svg(tmp_path, qapp):
    # qapp: a QApplication first. make_icns makes a QGuiApplication when none exists, and that
    # one would outlive this test: app.main.make_app then finds an application without
    # setStyle ("'QGuiApplication' object has no attribute 'setStyle'" in every later GUI test).
    import struct

    from PySide6.QtGui import QImage

    sys.path.insert(0, str(REPO / "packaging"))
    from make_icns import ICNS_TYPES, make_icns

    out = make_icns(tmp_path / "Tailor.icns")
    data = out.read_bytes()
    assert data[:4] == b"icns" and struct.unpack(">I", data[4:8])[0] == len(data)
    pos, seen = 8, {}
    while pos < len(data):
        kind, length = data[pos:pos + 4].decode(), struct.unpack(">I", data[pos + 4:pos + 8])[0]
        image = QImage.fromData(data[pos + 8:pos + length], "PNG")
        seen[kind] = (image.width(), image.height())
        # not an empty square: the SVG was really drawn
        assert any(image.pixelColor(x, y).alpha() for x in range(image.width())
                   for y in range(0, image.height(), max(1, image.height() // 16)))
        pos += length
    assert seen == {kind: (size, size) for kind, size in ICNS_TYPES.items()}
    assert not list(tmp_path.glob(".*"))  # written under a temporary name, renamed into place


def test_info_plist_opens_every_dataset_type_the_engine_reads():
    import plistlib

    sys.path.insert(0, str(REPO / "packaging"))
    from bundle_info import info_plist, project_version

    from engine.data.readers import FORMATS

    plist = plistlib.loads(plistlib.dumps(info_plist()))  # serialisable as a real Info.plist
    assert plist["CFBundleShortVersionString"] == project_version()
    dataset = next(d for d in plist["CFBundleDocumentTypes"] if d["CFBundleTypeName"] == "Dataset")
    assert {f".{e}" for e in dataset["CFBundleTypeExtensions"]} == set(FORMATS)
    assert {".jsonl", ".json", ".csv", ".tsv", ".txt"} <= set(FORMATS)
    assert any("public.folder" in d["LSItemContentTypes"] for d in plist["CFBundleDocumentTypes"])
    assert plist["LSMinimumSystemVersion"] == "13.5"
