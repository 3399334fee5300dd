#!/usr/bin/env bash
# Build the Linux bundle and its packages:
#   DIST/AirwayStudio/                                  one folder (run AirwayStudio/AirwayStudio)
#   DIST/AirwayStudio-<version>-linux-x86_64.tar.gz     + install.sh for a per-user install
#   DIST/airway-studio_<version>_amd64.deb              system package (installer/linux/make_deb.py)
#   DIST/THIRD_PARTY_NOTICES.txt                        also inside the bundle, shown by About
# then smoke-tests the bundle (installer/smoke_test.py). The bundle needs the system GL/X/xcb
# libraries that scripts/bootstrap.sh lists (the .deb declares them).
#
#   bash installer/build_linux.sh [--no-bootstrap] [--no-smoke] [--dist DIR] [--work DIR]
# --no-bootstrap: use the existing .venv as it is (pyinstaller must be in it)
set -euo pipefail
cd "$(dirname "$0")/.."
dist=dist work=build/pyinstaller bootstrap=1 smoke=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-bootstrap) bootstrap=0 ;;
    --no-smoke) smoke=0 ;;
    --dist) dist=$2; shift ;;
    --work) work=$2; shift ;;
    *) echo "build_linux.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
py=.venv/bin/python
if [ "$bootstrap" = 1 ]; then
  bash scripts/bootstrap.sh
  "$py" -m pip install -q -c .venv/torch-constraint.txt "pyinstaller>=6.5"
fi
t0=$(date +%s)
"$py" -m PyInstaller --noconfirm --clean --distpath "$dist" --workpath "$work" installer/airway_studio.spec
bundle="$dist/AirwayStudio"
# symbol tables (libtorch_cpu 434 -> 345 MB, cc3d 19 -> 2.5 MB), not where that would break a library
"$py" installer/linux/strip_bundle.py "$bundle"
t1=$(date +%s)
install -m 0644 installer/linux/airway-studio.desktop "$bundle/"
install -m 0755 installer/linux/install.sh "$bundle/"
install -m 0644 "$bundle/_internal/resources/THIRD_PARTY_NOTICES.txt" "$bundle/THIRD_PARTY_NOTICES.txt"
install -m 0644 "$bundle/THIRD_PARTY_NOTICES.txt" "$dist/THIRD_PARTY_NOTICES.txt"
version=$("$py" -c "import core; print(core.__version__)")
tarball="$dist/AirwayStudio-$version-linux-x86_64.tar.gz"
tar -C "$dist" -czf "$tarball" AirwayStudio
t2=$(date +%s)
"$py" installer/linux/make_deb.py --bundle "$bundle" --out "$dist" --version "$version"
t3=$(date +%s)
echo "pyinstaller $((t1 - t0)) s, tar.gz $((t2 - t1)) s, .deb $((t3 - t2)) s"
echo "bundle $(du -sh "$bundle" | cut -f1); $(ls -l "$tarball" "$dist"/airway-studio_*_amd64.deb | awk '{printf "%s %d MiB; ", $NF, $5 / 1048576}')"
if [ "$smoke" = 1 ]; then
  # compressed series (GDCM, from this venv) the frozen decoder must read exactly; the real
  # JPEG 2000 series too when ../shared/data is beside the checkout
  series=$(mktemp -d)
  trap 'rm -rf "$series"' EXIT
  dicom=()
  for syntax in jpeg-lossless jpeg2000; do
    "$py" installer/compress_dicom.py "$series/$syntax" --syntax "$syntax" >/dev/null
    dicom+=("$series/$syntax")
  done
  [ -d ../shared/data/totalseg/example_ct_dicom ] && dicom+=(../shared/data/totalseg/example_ct_dicom)
  "$py" installer/smoke_test.py --app "$bundle/AirwayStudio" --dicom "${dicom[@]}"
fi
