"""Temporary files of atomic writes (issue 27, item 11).

A writer killed mid-write, or stopped by a full disk, used to leave its hidden
``.NAME.XXXX.tmp.nii.gz`` / ``.partial`` file forever, and the disk-full message
named that hidden file instead of the output. Staged files now carry the
writer's pid; the next write into the folder removes those whose writer is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError, WriteError
from core.volume import Geometry, LabelVolume

ROOT = Path(__file__).resolve().parents[1]

# a writer that stops half-way (its content is written, the rename never comes) and waits to be killed
_HALF_WRITER = """
import sys, time
from core.staging import atomic_write

def writer(tmp):
    tmp.write_bytes(b"half of a volume")
    print(tmp, flush=True)
    time.sleep(600)

atomic_write(sys.argv[1], writer, ".nii.gz")
"""


def _label() -> LabelVolume:
    arr = np.zeros((8, 9, 10), np.uint8)
    arr[2:5, 3:6, 4:7] = 1
    return LabelVolume(arr, Geometry(spacing=(0.7, 0.7, 1.0)), "mask")


def _hidden(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("."))


def _start_writer(target: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HALF_WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # blocks until the staged file is written: no sleep
    assert line, "the writer exited before staging its file"
    return proc, Path(line)


def test_a_killed_writers_staged_file_carries_its_pid_and_goes_at_the_next_write(tmp_path):
    from core.io import read_label, write_volume

    proc, staged = _start_writer(tmp_path / "reference.nii.gz")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert staged.exists() and staged.parent == tmp_path
    assert f"-{proc.pid}-" in staged.name and staged.name.startswith(".reference.nii.gz.")
    assert not (tmp_path / "reference.nii.gz").exists()  # the rename never came: no half file under the name

    write_volume(_label(), tmp_path / "other.nii.gz")  # the next save into the folder
    assert _hidden(tmp_path) == []
    assert read_label(tmp_path / "other.nii.gz").voxel_count() == 27


def test_a_command_writing_into_the_folder_removes_a_killed_writers_file(tmp_path):
    from core.cli import main

    proc, staged = _start_writer(tmp_path / "ct.nii.gz")
    proc.kill()
    proc.wait(timeout=60)
    assert staged.exists()
    assert main(["phantom", "--size", "24", "--out", str(tmp_path)]) == 0  # stages its files through core.outputs
    assert _hidden(tmp_path) == [] and (tmp_path / "ct.nii.gz").is_file()


def test_a_live_writers_staged_file_is_left_alone(tmp_path):
    from core.io import write_volume

    proc, staged = _start_writer(tmp_path / "reference.nii.gz")
    try:
        write_volume(_label(), tmp_path / "other.nii.gz")
        assert _hidden(tmp_path) == [staged]  # still being written by a running process
    finally:
        proc.kill()
        proc.wait(timeout=60)
    write_volume(_label(), tmp_path / "third.nii.gz")
    assert _hidden(tmp_path) == []


def test_a_reused_pid_does_not_keep_a_stale_file(tmp_path):
    """A pid now held by a process started after the file was last written is not its writer."""
    from core.outputs import atomic_write_text
    from core.staging import staged_prefix

    # the name this very process would use, but written long before this process started: not its file
    stale = tmp_path / (staged_prefix(tmp_path / "notes.txt").replace(str(os.getpid()), "1") + "abcdefgh.partial")
    stale.write_text("left by an old writer whose pid 1 now belongs to init")
    os.utime(stale, (1_000_000, 1_000_000))  # 1970: before any process running now was started
    atomic_write_text(tmp_path / "notes.txt", "new")
    assert _hidden(tmp_path) == []


def test_a_folder_of_many_files_is_cleaned_at_the_first_write_and_stays_fast(tmp_path, monkeypatch):
    from core.outputs import atomic_write_bytes
    from core.staging import BIG_FOLDER, staged_prefix

    for i in range(BIG_FOLDER + 100):  # a cache folder
        (tmp_path / f"{i:05d}.json").write_bytes(b"{}")
    stale = tmp_path / (staged_prefix(tmp_path / "00001.json").replace(f"-{os.getpid()}-", "-1-") + "abcdefgh.partial")
    stale.write_bytes(b"{")
    os.utime(stale, (1_000_000, 1_000_000))
    atomic_write_bytes(tmp_path / "00001.json", b"{}")
    assert not stale.exists()
    listed = []
    scandir = os.scandir

    def counting(path):
        listed.append(path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counting)
    for i in range(50):
        atomic_write_bytes(tmp_path / f"{i:05d}.json", b"{}")
    # 10,000 entries take ~20 ms to list: not on every write, once a minute at most
    assert [p for p in listed if os.fspath(p) == os.fspath(tmp_path)] == []


def test_another_machines_staged_file_is_kept_until_it_is_a_day_old(tmp_path):
    from core.outputs import atomic_write_text

    young = tmp_path / ".ref.nii.gz.000000-12345-abcdefgh.partial.nii.gz"
    old = tmp_path / ".pred.nii.gz.000000-12345-ijklmnop.partial.nii.gz"
    young.write_bytes(b"x")
    old.write_bytes(b"x")
    os.utime(old, (1_000_000, 1_000_000))
    atomic_write_text(tmp_path / "notes.txt", "new")
    assert _hidden(tmp_path) == [young]


def test_a_user_file_that_looks_hidden_is_never_touched(tmp_path):
    from core.outputs import atomic_write_text

    mine = [tmp_path / ".bashrc", tmp_path / ".ref.nii.gz.bak", tmp_path / ".notes.partial"]
    for p in mine:
        p.write_text("mine")
        os.utime(p, (1_000_000, 1_000_000))
    atomic_write_text(tmp_path / "notes.txt", "new")
    assert _hidden(tmp_path) == sorted(mine)


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as a full disk fails
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
if sys.argv[1] == "save":  # what the app's Save reference does
    from core.errors import AirwayError
    from core.io import read_ct, write_volume
    try:
        write_volume(read_ct(sys.argv[2]), sys.argv[3])
    except AirwayError as exc:
        sys.exit(f"error: {exc}")
from core.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["phantom command", "save a volume"])
def test_a_failed_write_names_the_output_and_leaves_no_temp_file(tmp_path, how):
    """A write that the file system refuses half-way (file size limit: the same error path as a full disk)."""
    if how == "phantom command":
        argv = ["phantom", "--size", "32", "--out", str(tmp_path / "ph")]
        folder = tmp_path / "ph"
    else:
        from core.io import write_volume
        from core.phantom import make_phantom

        write_volume(make_phantom(32, seed=0).ct, tmp_path / "ct.nii.gz")
        folder = tmp_path / "out"
        argv = ["save", str(tmp_path / "ct.nii.gz"), str(folder / "copy.nii.gz")]
    res = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert "File too large" in last, last
    assert str(folder) in last, last
    assert ".partial" not in last and ".tmp" not in last, last  # the output's name, not the hidden file's
    assert not folder.exists() or _hidden(folder) == []


def test_write_volume_and_the_atomic_writers_name_the_target_on_a_full_disk(tmp_path, monkeypatch):
    import errno

    from core import io
    from core.outputs import atomic_write_bytes

    def disk_full(volume, path, suffix=None, compress=True):
        Path(path).write_bytes(b"half")
        raise InputError(f"Could not write the volume: {os.strerror(errno.ENOSPC)}", "Free space.", path=path)

    monkeypatch.setattr(io, "write_volume_file", disk_full)
    with pytest.raises(InputError) as err:
        io.write_volume(_label(), tmp_path / "reference.nii.gz")
    assert str(err.value).startswith(f"{tmp_path / 'reference.nii.gz'}: Could not write the volume: No space left")
    assert _hidden(tmp_path) == []

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(WriteError) as werr:
        atomic_write_bytes(tmp_path / "project.json", b"{}")
    assert isinstance(werr.value, OSError) and werr.value.errno == errno.ENOSPC  # callers catching OSError still do
    assert ".partial" not in str(werr.value) and str(tmp_path / "project.json") in str(werr.value)
    assert _hidden(tmp_path) == []
