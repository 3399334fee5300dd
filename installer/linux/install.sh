#!/usr/bin/env bash
# Install the unpacked bundle for the current user: ~/.local/opt/AirwayStudio,
# a launcher in ~/.local/bin and a menu entry. Re-running upgrades in place.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${PREFIX:-$HOME/.local}"
mkdir -p "$dest/opt" "$dest/bin" "$dest/share/applications" "$dest/share/icons/hicolor/scalable/apps"
rm -rf "$dest/opt/AirwayStudio.new"
cp -a "$here" "$dest/opt/AirwayStudio.new"
[ -d "$dest/opt/AirwayStudio" ] && mv "$dest/opt/AirwayStudio" "$dest/opt/AirwayStudio.old"
mv "$dest/opt/AirwayStudio.new" "$dest/opt/AirwayStudio"
rm -rf "$dest/opt/AirwayStudio.old"
ln -sf "$dest/opt/AirwayStudio/AirwayStudio" "$dest/bin/airway-studio"
icon=$(find "$dest/opt/AirwayStudio" -path '*resources/icons/airway_studio.svg' | head -n 1)
[ -n "$icon" ] && cp "$icon" "$dest/share/icons/hicolor/scalable/apps/airway-studio.svg"
sed "s|^Exec=.*|Exec=$dest/opt/AirwayStudio/AirwayStudio %F|" "$here/airway-studio.desktop" > "$dest/share/applications/airway-studio.desktop"
echo "Installed. Start it from the menu or with: airway-studio"
