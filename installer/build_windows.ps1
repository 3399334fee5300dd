# Build the Windows installer: a PyInstaller one-folder bundle, then an Inno Setup
# installer (AirwayStudio-<version>-setup.exe). Needs Python 3.11+ and Inno Setup 6 (iscc on PATH).
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")
if (-not (Test-Path .venv)) { py -3.11 -m venv .venv }
$py = ".venv\Scripts\python.exe"
& $py -m pip install -q "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
"torch==2.13.0" | Out-File -Encoding ascii .venv\torch-constraint.txt
& $py -m pip install -q -c .venv\torch-constraint.txt -e . "pyinstaller>=6.5"
& .venv\Scripts\pyinstaller.exe --noconfirm --clean --distpath dist --workpath build\pyinstaller installer\airway_studio.spec
$version = & $py -c "import core; print(core.__version__)"
iscc /DAppVersion=$version installer\windows\airway_studio.iss
