# Build the Windows installer: a PyInstaller one-folder bundle (AirwayStudio.exe, the GUI, and
# airway.exe, the console CLI, sharing one _internal folder), then an Inno Setup installer
# (dist\AirwayStudio-<version>-setup.exe). Needs Python 3.11+ and Inno Setup 6.3+.
#   .\installer\build_windows.ps1 [-Python py] [-SkipInstaller]
param(
    [string]$Python = "",          # interpreter that makes .venv (default: py -3.11)
    [switch]$SkipInstaller         # bundle only, no Inno Setup
)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")

# $ErrorActionPreference does not cover native programs (before PowerShell 7.4): check each exit code
# (a simple function, not an advanced one: "-m", "-e", "-q" must reach the program, not bind as parameters)
function Invoke-Checked {
    $exe, $rest = $args
    & $exe @rest
    if ($LASTEXITCODE -ne 0) { throw "$exe $($rest -join ' ') failed with exit code $LASTEXITCODE" }
}

if (-not (Test-Path .venv\Scripts\python.exe)) {
    if ($Python) { Invoke-Checked $Python -m venv .venv } else { Invoke-Checked py -3.11 -m venv .venv }
}
$py = ".venv\Scripts\python.exe"
Invoke-Checked $py -m pip install -q --upgrade pip
Invoke-Checked $py -m pip install -q "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
"torch==2.13.0" | Out-File -Encoding ascii .venv\torch-constraint.txt
# fast-cpu: ONNX Runtime is the default CPU engine (the spec leaves OpenVINO out of the bundle)
Invoke-Checked $py -m pip install -q -c .venv\torch-constraint.txt -e ".[fast-cpu]" "pyinstaller>=6.5"
Invoke-Checked .venv\Scripts\pyinstaller.exe --noconfirm --clean --distpath dist --workpath build\pyinstaller installer\airway_studio.spec
Copy-Item dist\AirwayStudio\_internal\resources\THIRD_PARTY_NOTICES.txt dist\AirwayStudio\THIRD_PARTY_NOTICES.txt
Copy-Item dist\AirwayStudio\THIRD_PARTY_NOTICES.txt dist\THIRD_PARTY_NOTICES.txt
Invoke-Checked dist\AirwayStudio\airway.exe --version
if ($SkipInstaller) { exit 0 }

$version = (& $py -c "import core; print(core.__version__)").Trim()
if ($LASTEXITCODE -ne 0 -or -not $version) { throw "could not read core.__version__" }
$iscc = (Get-Command iscc -ErrorAction SilentlyContinue).Source
if (-not $iscc) {
    $iscc = @("${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe", "$env:ProgramFiles\Inno Setup 6\ISCC.exe",
              "$env:LOCALAPPDATA\Programs\Inno Setup 6\ISCC.exe") | Where-Object { Test-Path $_ } | Select-Object -First 1
}
if (-not $iscc) { throw "Inno Setup 6 (ISCC.exe) not found: install it (choco install innosetup) or put iscc on PATH" }
Invoke-Checked $iscc "/DAppVersion=$version" installer\windows\airway_studio.iss
Write-Host "built dist\AirwayStudio-$version-setup.exe"
