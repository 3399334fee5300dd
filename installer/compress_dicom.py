"""Write the smoke test's DICOM series compressed, for ``smoke_test.py --dicom``.

    python installer/compress_dicom.py OUT_DIR [--syntax jpeg-lossless|jpeg2000|jpeg-ls]

Runs in the build environment (python-gdcm from the project's dependencies), not
in the bundle: the frozen build must then decode what GDCM encoded here, which is
what proves its DICOM decoder was collected. Most compressed CT archives use
JPEG lossless (process 14) or JPEG 2000.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smoke_test import dicom_expectation, write_dicom_series  # noqa: E402

SYNTAXES = {
    "jpeg-lossless": ("JPEGLosslessProcess14_1", "1.2.840.10008.1.2.4.70"),
    "jpeg2000": ("JPEG2000Lossless", "1.2.840.10008.1.2.4.90"),
    "jpeg-ls": ("JPEGLSLossless", "1.2.840.10008.1.2.4.80"),
}


def compress(path: Path, syntax: str) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {path}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, SYNTAXES[syntax][0])))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM cannot compress {path} to {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"GDCM cannot write {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--syntax", choices=sorted(SYNTAXES), default="jpeg-lossless")
    args = p.parse_args(argv)
    import json

    import pydicom

    expect = dicom_expectation(*write_dicom_series(args.out))

    for f in sorted(args.out.glob("*.dcm")):
        compress(f, args.syntax)
        uid = pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID
        if uid != SYNTAXES[args.syntax][1]:
            raise RuntimeError(f"{f} has transfer syntax {uid} after compression")
    # what the frozen build must read back (smoke_test.py --dicom checks it voxel range and geometry exactly)
    (args.out / "expected.json").write_text(json.dumps({**expect, "transfer_syntax": args.syntax}), encoding="utf-8")
    print(f"{args.out}: the smoke series as {args.syntax} ({SYNTAXES[args.syntax][1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
