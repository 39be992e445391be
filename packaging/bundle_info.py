"""Tailor.app's Info.plist, as data (tailor.spec passes it to PyInstaller's BUNDLE; the tests
check it without a Mac)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLE_ID = "org.tailor.Tailor"
MINIMUM_MACOS = "13.5"  # MLX needs macOS 13.5+ on Apple Silicon


def project_version() -> str:
    """The version in pyproject.toml (one place for it)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def dataset_extensions() -> list[str]:
    """The file types `tailor data` reads (engine/data/readers.py), without the dot."""
    from engine.data.readers import FORMATS

    return sorted(ext.lstrip(".") for ext in FORMATS)


def info_plist(version: str | None = None) -> dict:
    version = version or project_version()
    return {
        "CFBundleName": "Tailor",
        "CFBundleDisplayName": "Tailor",
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleShortVersionString": version,
        "CFBundleVersion": version,
        "LSMinimumSystemVersion": MINIMUM_MACOS,
        "LSArchitecturePriority": ["arm64"],
        "NSHighResolutionCapable": True,
        "NSRequiresAquaSystemAppearance": False,  # follow the system's dark mode
        "LSApplicationCategoryType": "public.app-category.developer-tools",
        "NSHumanReadableCopyright": "MIT licence",
        # A dataset (or a folder of train/valid files) dropped on the Dock icon opens on the
        # Data page: Qt delivers it as a QFileOpenEvent (app/main.py).
        "CFBundleDocumentTypes": [
            {"CFBundleTypeName": "Dataset", "CFBundleTypeRole": "Viewer",
             "LSHandlerRank": "Alternate",
             "CFBundleTypeExtensions": dataset_extensions(),
             "LSItemContentTypes": ["public.json", "public.comma-separated-values-text",
                                    "public.tab-separated-values-text", "public.plain-text",
                                    "net.daringfireball.markdown"]},
            {"CFBundleTypeName": "Folder", "CFBundleTypeRole": "Viewer",
             "LSHandlerRank": "Alternate", "LSItemContentTypes": ["public.folder"]},
        ],
    }
