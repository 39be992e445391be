#!/usr/bin/env bash
# Build the one-folder frozen Tailor on Linux from the same spec as Tailor.app, then run the
# frozen app's own self-test. From the repository root, after `make setup`:
#
#   packaging/build_linux.sh            # -> packaging/dist/Tailor/Tailor
#
# It proves the recipe (hidden imports, data files, the engine worker started as
# `Tailor -m engine ...`, llama.cpp inside the bundle) on a machine we have; the Mac build adds
# only the BUNDLE, Metal and signing steps (build_macos.sh).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
BUILD="$REPO/packaging/build/linux"
DIST="$REPO/packaging/dist"
export TAILOR_VERSION="${TAILOR_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")}"

[[ -x "$VENV/bin/python" ]] || { echo "build_linux.sh: run 'make setup' first (no $VENV)"; exit 2; }
"$VENV/bin/python" -m pip install -q "pyinstaller>=6.10"

echo "==> PyInstaller ($("$VENV/bin/pyinstaller" --version))"
start=$(date +%s)
QT_QPA_PLATFORM=offscreen "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN --distpath "$DIST" \
  --workpath "$BUILD" "$REPO/packaging/tailor.spec"
APP="$DIST/Tailor/Tailor"
echo "==> built $APP in $(( $(date +%s) - start )) s ($(du -sh "$DIST/Tailor" | cut -f1))"

echo "==> checks"
"$APP" -m engine train --help >/dev/null || { echo "the bundled engine CLI does not start"; exit 1; }
start=$(date +%s)
# Its own temporary library; offscreen, so no display is needed.
"$APP" --self-test
echo "==> self-test of the frozen app took $(( $(date +%s) - start )) s"
