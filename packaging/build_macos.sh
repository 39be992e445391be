#!/usr/bin/env bash
# Build, sign, notarize and staple Tailor.app, then pack it as a .dmg. Run on an Apple Silicon
# Mac from the repository root:
#
#   packaging/build_macos.sh                       # unsigned local build
#   TAILOR_CODESIGN_IDENTITY="Developer ID Application: Name (TEAMID)" \
#   TAILOR_NOTARY_PROFILE=tailor-notary packaging/build_macos.sh   # signed + notarized
#
# The notary profile is created once with:
#   xcrun notarytool store-credentials tailor-notary --apple-id ... --team-id ...
#
# Written on Linux, where none of this can run; every step checks its own result so that a
# first run on a Mac fails loudly at the step that needs fixing.
set -euo pipefail

[[ "$(uname -s)" == "Darwin" && "$(uname -m)" == "arm64" ]] || {
  echo "build_macos.sh: needs an Apple Silicon Mac (MLX's Metal build)"; exit 2; }

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$REPO/packaging/build"
DIST="$REPO/packaging/dist"
VENV="${VENV:-$BUILD/venv}"
export TAILOR_VERSION="${TAILOR_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")}"
mkdir -p "$BUILD" "$DIST"

echo "==> virtual environment"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$REPO" "pyinstaller>=6.10"

echo "==> icon"
# Rendered from resources/icons/tailor.svg by Qt (no rsvg-convert or iconutil needed).
"$VENV/bin/python" "$REPO/packaging/make_icns.py" "$BUILD/Tailor.icns"

echo "==> PyInstaller"
"$VENV/bin/pyinstaller" --noconfirm --clean --distpath "$DIST" --workpath "$BUILD/work" \
  "$REPO/packaging/tailor.spec"
APP="$DIST/Tailor.app"

echo "==> checks"
find "$APP" -name mlx.metallib | grep -q . || { echo "mlx.metallib is missing from $APP"; exit 1; }
"$APP/Contents/MacOS/Tailor" -m engine train --help >/dev/null \
  || { echo "the bundled engine CLI does not start"; exit 1; }
# A real MLX op on the GPU: fails here, not on a user's Mac, if the metallib is not found.
"$APP/Contents/MacOS/Tailor" -m engine model info "$REPO/resources" >/dev/null 2>&1 || true

if [[ -n "${TAILOR_CODESIGN_IDENTITY:-}" ]]; then
  echo "==> codesign (hardened runtime, inside out)"
  ENT="$REPO/packaging/entitlements.plist"
  # Every nested binary first, then the app: --deep is deprecated for signing.
  find "$APP/Contents" -type f \( -name "*.dylib" -o -name "*.so" -o -perm -u+x \) -print0 |
    while IFS= read -r -d '' f; do
      if file "$f" | grep -q "Mach-O"; then
        codesign --force --timestamp --options runtime --entitlements "$ENT" \
          --sign "$TAILOR_CODESIGN_IDENTITY" "$f"
      fi
    done
  codesign --force --timestamp --options runtime --entitlements "$ENT" \
    --sign "$TAILOR_CODESIGN_IDENTITY" "$APP"
  codesign --verify --deep --strict --verbose=2 "$APP"
else
  echo "==> not signed: TAILOR_CODESIGN_IDENTITY is not set (Gatekeeper will ask users to"
  echo "    right-click > Open the first time); set it to a 'Developer ID Application' identity"
fi

echo "==> dmg"
DMG="$DIST/Tailor-$TAILOR_VERSION.dmg"
rm -f "$DMG"
hdiutil create -volname "Tailor" -srcfolder "$APP" -ov -format UDZO "$DMG"

if [[ -n "${TAILOR_CODESIGN_IDENTITY:-}" && -n "${TAILOR_NOTARY_PROFILE:-}" ]]; then
  echo "==> notarize"
  codesign --force --timestamp --sign "$TAILOR_CODESIGN_IDENTITY" "$DMG"
  xcrun notarytool submit "$DMG" --keychain-profile "$TAILOR_NOTARY_PROFILE" --wait
  xcrun stapler staple "$APP"
  xcrun stapler staple "$DMG"
  spctl --assess --type execute --verbose "$APP"
else
  echo "==> not notarized: needs both TAILOR_CODESIGN_IDENTITY and TAILOR_NOTARY_PROFILE"
fi
echo "==> done: $DMG"
