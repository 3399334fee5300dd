; Inno Setup 6.3+ script: per-user install of the PyInstaller bundle, Start menu entry,
; optional desktop icon, optional `airway` command on the user's PATH, "Open with" for
; NIfTI volumes, clean uninstall. Built by installer\build_windows.ps1 (iscc /DAppVersion=X).
#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
[Setup]
; a fixed GUID: upgrades and the uninstaller find earlier installs by it ("{{" is a literal "{")
AppId={{693F511E-2E3C-40E7-9E5F-A5CC3F709506}
AppName=Airway Studio
AppVersion={#AppVersion}
AppPublisher=Airway Studio developers
DefaultDirName={localappdata}\Programs\Airway Studio
DefaultGroupName=Airway Studio
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
OutputDir=..\..\dist
OutputBaseFilename=AirwayStudio-{#AppVersion}-setup
SetupIconFile=..\..\resources\icons\airway_studio.ico
UninstallDisplayIcon={app}\AirwayStudio.exe
WizardStyle=modern
; lzma2/max over ~1 GB needs several GB of RAM and long minutes; ultra64 is no better for DLLs
Compression=lzma2/max
SolidCompression=yes
LZMAUseSeparateProcess=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
ChangesEnvironment=yes
ChangesAssociations=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add the ""airway"" command line tool to PATH"; Flags: unchecked

[Files]
Source: "..\..\dist\AirwayStudio\*"; DestDir: "{app}"; Flags: recursesubdirs createallsubdirs ignoreversion

[Icons]
Name: "{group}\Airway Studio"; Filename: "{app}\AirwayStudio.exe"
Name: "{group}\Third-party notices"; Filename: "{app}\THIRD_PARTY_NOTICES.txt"
Name: "{group}\Uninstall Airway Studio"; Filename: "{uninstallexe}"
Name: "{userdesktop}\Airway Studio"; Filename: "{app}\AirwayStudio.exe"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Software\Classes\.nii\OpenWithProgids"; ValueType: string; ValueName: "AirwayStudio.Volume"; ValueData: ""; Flags: uninsdeletevalue
Root: HKCU; Subkey: "Software\Classes\AirwayStudio.Volume"; ValueType: string; ValueData: "CT volume"; Flags: uninsdeletekey
Root: HKCU; Subkey: "Software\Classes\AirwayStudio.Volume\DefaultIcon"; ValueType: string; ValueData: """{app}\AirwayStudio.exe"",0"
Root: HKCU; Subkey: "Software\Classes\AirwayStudio.Volume\shell\open\command"; ValueType: string; ValueData: """{app}\AirwayStudio.exe"" ""%1"""
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\AirwayStudio.exe"; Description: "Open Airway Studio with the demo case"; Parameters: "--demo"; Flags: postinstall nowait skipifsilent

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Path: string;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';') = 0;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  Path, Dir: string;
  P: Integer;
begin
  // take the app folder back out of the user's PATH (the [Registry] entry only adds it)
  if CurUninstallStep <> usPostUninstall then
    exit;
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path) then
    exit;
  Dir := ExpandConstant('{app}');
  P := Pos(';' + Uppercase(Dir), Uppercase(Path));
  if P > 0 then
  begin
    Delete(Path, P, Length(Dir) + 1);
    RegWriteExpandStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path);
  end;
end;
