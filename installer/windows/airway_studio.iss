; Inno Setup script: per-user install of the PyInstaller bundle, Start menu entry,
; file associations for NIfTI volumes, clean uninstall.
#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
[Setup]
AppId={{6F1C2B9E-7A43-4E0B-9E1D-AIRWAYSTUDIO01}
AppName=Airway Studio
AppVersion={#AppVersion}
DefaultDirName={localappdata}\Programs\Airway Studio
DefaultGroupName=Airway Studio
PrivilegesRequired=lowest
OutputDir=..\..\dist
OutputBaseFilename=AirwayStudio-{#AppVersion}-setup
Compression=lzma2/max
SolidCompression=yes
ArchitecturesInstallIn64BitMode=x64compatible

[Files]
Source: "..\..\dist\AirwayStudio\*"; DestDir: "{app}"; Flags: recursesubdirs ignoreversion

[Icons]
Name: "{group}\Airway Studio"; Filename: "{app}\AirwayStudio.exe"
Name: "{group}\Uninstall Airway Studio"; Filename: "{uninstallexe}"

[Registry]
Root: HKCU; Subkey: "Software\Classes\.nii\OpenWithProgids"; ValueType: string; ValueName: "AirwayStudio.Volume"; ValueData: ""; Flags: uninsdeletevalue
Root: HKCU; Subkey: "Software\Classes\AirwayStudio.Volume\shell\open\command"; ValueType: string; ValueData: """{app}\AirwayStudio.exe"" ""%1"""; Flags: uninsdeletekey

[Run]
Filename: "{app}\AirwayStudio.exe"; Description: "Open Airway Studio with the demo case"; Parameters: "--demo"; Flags: postinstall nowait skipifsilent
