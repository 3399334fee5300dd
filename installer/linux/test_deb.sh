#!/usr/bin/env bash
# Install the .deb with dpkg, check what it put where, run the smoke test through the
# commands on PATH, remove it with dpkg -r, check that nothing it installed is left, purge it.
# Needs root and the package's Depends installed (dpkg -i does not fetch them).
#   sudo bash installer/linux/test_deb.sh dist/airway-studio_<version>_amd64.deb [--quick]
# --quick: only --version, phantom, info and segment (not train and the GUI).
set -euo pipefail
deb=$(readlink -f "${1:?usage: test_deb.sh PACKAGE.deb [--quick]}")
quick=${2:-}
here="$(cd "$(dirname "$0")" && pwd)"
pkg=airway-studio
fail() { echo "test_deb: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
  && fail "$pkg is already installed here; remove it first (dpkg -r $pkg)"

dpkg -i "$deb" || fail "dpkg -i failed (missing Depends? dpkg-deb -f $deb Depends)"
trap 'dpkg -r "$pkg" >/dev/null 2>&1 || true' EXIT   # never leave it installed on failure
files=$(mktemp)
dpkg -L "$pkg" > "$files"
for f in /opt/airway-studio/AirwayStudio /usr/bin/airway /usr/bin/airway-studio \
         /usr/share/applications/airway-studio.desktop /usr/share/icons/hicolor/scalable/apps/airway-studio.svg \
         /usr/share/icons/hicolor/256x256/apps/airway-studio.png /usr/share/doc/airway-studio/copyright; do
  [ -e "$f" ] || fail "$f not installed"
  grep -qx "$f" "$files" || fail "$f is not in the package's file list"
done
[ "$(command -v airway)" = /usr/bin/airway ] || fail "airway is not on PATH"
[ "$(command -v airway-studio)" = /usr/bin/airway-studio ] || fail "airway-studio is not on PATH"
grep -q '^Exec=airway-studio %F$' /usr/share/applications/airway-studio.desktop || fail "menu entry Exec"
grep -q '^Icon=airway-studio$' /usr/share/applications/airway-studio.desktop || fail "menu entry Icon"
if command -v desktop-file-validate >/dev/null; then
  desktop-file-validate /usr/share/applications/airway-studio.desktop || fail "desktop-file-validate"
fi
grep -q "THIRD-PARTY NOTICES" /usr/share/doc/airway-studio/copyright || fail "copyright lacks the notices"
airway --version
echo "installed $(dpkg-query -W -f='${Package} ${Version}, ${Installed-Size} KiB' "$pkg"), $(wc -l < "$files") paths"

python=$(command -v python3.11 || command -v python3)
only=()
[ "$quick" = "--quick" ] && only=(--only version info segment-model)
# the GUI as users start it (airway-studio), the CLI as `airway`; through the /usr/bin symlinks
"$python" "$here/../smoke_test.py" --app /usr/bin/airway-studio --cli /usr/bin/airway "${only[@]}" --allow-skip \
  || fail "smoke test of the installed package"

dpkg -r "$pkg"
trap - EXIT
dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && fail "still installed after dpkg -r"
left=0
while IFS= read -r f; do
  # shared folders (/usr/bin, the hicolor tree...) stay; every file, link and folder of ours must be gone
  [ -e "$f" ] || [ -L "$f" ] || continue
  if [ -d "$f" ] && [ ! -L "$f" ] && [[ "$f" != /opt/airway-studio* ]] && [[ "$f" != /usr/share/doc/airway-studio* ]]; then
    continue
  fi
  echo "left behind: $f" >&2; left=$((left + 1))
done < "$files"
rm -f "$files"
[ "$left" -eq 0 ] || fail "$left paths left after dpkg -r"
[ ! -e /opt/airway-studio ] || fail "/opt/airway-studio left after dpkg -r"
# dpkg -r keeps the package's record ("config-files": it has a postrm); purging drops that too
dpkg -P "$pkg" 2>&1 | grep -v "not empty so not removed" || true
dpkg-query -W "$pkg" >/dev/null 2>&1 && fail "dpkg still has a record of $pkg after dpkg -P"
echo "test_deb: PASS (installed, smoke-tested from PATH, removed cleanly)"
