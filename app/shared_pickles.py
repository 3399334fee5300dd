"""Objects handed between this process and the analysis child through one shared-memory block.

Whatever a ``ProcessPoolExecutor`` result carries is read from a pipe and unpickled by
the executor's manager thread in one C call, and a C call holds the GIL from start to
end: on the ATM'22 pair, a result that carried the 42 MB reference tree and 1 MB of
regions held it for about 50 ms on a quiet machine (py-spy ``--gil``), and the GUI
thread waited for all of it. Here each object is pickled (protocol 5) with its arrays
out of band, and everything goes into one block of shared memory; only the small
:class:`SharedPickles` travels through the pipe. The reader copies the arrays with
numpy, which lets go of the GIL, and unpickles the rest one object at a time, so the
GIL changes hands between objects.

Where ``/dev/shm`` has no room for a block (a container's 64 MB default), the bytes
travel inside :class:`SharedPickles` instead: slower, never wrong. Writing past a full
``/dev/shm`` would kill the writer with SIGBUS rather than raise.

Qt-free: the child imports it.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# room left in /dev/shm beyond a block before one is made there
SHM_MARGIN_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Piece:
    """One pickled object in the block: its pickle at ``start`` and its out-of-band arrays."""

    start: int
    size: int
    buffers: tuple[tuple[int, int], ...]  # (offset, bytes) of each out-of-band buffer


@dataclass(frozen=True)
class SharedPickles:
    """Where to read a sequence of objects: a shared-memory block by ``name``, else ``data``."""

    name: str | None
    nbytes: int
    pieces: tuple[Piece, ...]
    data: bytes | None = None

    def __len__(self) -> int:
        return len(self.pieces)


def shm_has_room(nbytes: int) -> bool:
    if not os.path.isdir("/dev/shm"):
        return True  # Windows and macOS back shared memory with the paging file / VM, not a tmpfs
    return shutil.disk_usage("/dev/shm").free >= nbytes + SHM_MARGIN_BYTES


def share_pickles(objects: Sequence[Any], *, shared_memory: bool | None = None) -> SharedPickles:
    """``objects`` pickled into one block (``shared_memory`` None: where /dev/shm has room).

    The block outlives this call: whoever reads it last passes ``unlink=True`` to
    :func:`read_pickles` (or calls :func:`unlink_pickles`)."""
    chunks: list[memoryview | bytes] = []
    pieces: list[Piece] = []
    pos = 0
    for obj in objects:
        oob: list[pickle.PickleBuffer] = []
        inband = pickle.dumps(obj, protocol=5, buffer_callback=oob.append)
        start = pos
        chunks.append(inband)
        pos += len(inband)
        spans = []
        for buf in oob:
            raw = buf.raw()
            spans.append((pos, raw.nbytes))
            chunks.append(raw)
            pos += raw.nbytes
        pieces.append(Piece(start, len(inband), tuple(spans)))
    if shared_memory is None:
        shared_memory = shm_has_room(pos)
    if not shared_memory:
        return SharedPickles(None, pos, tuple(pieces), b"".join(chunks))
    from multiprocessing import shared_memory as shm_module

    shm = shm_module.SharedMemory(create=True, size=max(1, pos))
    try:
        dest = np.ndarray((pos,), dtype=np.uint8, buffer=shm.buf)
        at = 0
        for chunk in chunks:
            n = len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            np.copyto(dest[at : at + n], np.frombuffer(chunk, dtype=np.uint8))  # numpy copies without the GIL
            at += n
        del dest
    except BaseException:
        shm.close()
        shm.unlink()
        raise
    shm.close()
    return SharedPickles(shm.name, pos, tuple(pieces))


def read_pickles(shared: SharedPickles, *, unlink: bool) -> list[Any]:
    """The objects again, in order; ``unlink`` frees the block after reading."""
    if shared.name is None:
        assert shared.data is not None
        return _read(memoryview(shared.data), shared.pieces)
    from multiprocessing import shared_memory as shm_module

    # attaching registers the name with the resource tracker again; spawn children share the
    # parent's tracker, which keeps a set of names, so one unlink anywhere balances it
    shm = shm_module.SharedMemory(name=shared.name)
    try:
        assert shm.buf is not None  # mapped until close()
        return _read(shm.buf, shared.pieces)
    finally:
        shm.close()
        if unlink:
            shm.unlink()


def unlink_pickles(shared: SharedPickles | None) -> None:
    """Free a block nobody will read again (missing already: nothing to do)."""
    if shared is None or shared.name is None:
        return
    from multiprocessing import shared_memory as shm_module

    try:
        shm = shm_module.SharedMemory(name=shared.name)
    except FileNotFoundError:
        return
    shm.close()
    shm.unlink()


def _read(mem: memoryview, pieces: Sequence[Piece]) -> list[Any]:
    source = np.ndarray((mem.nbytes,), dtype=np.uint8, buffer=mem)
    out = []
    try:
        for piece in pieces:
            copies = []
            for offset, n in piece.buffers:
                copy = np.empty(n, dtype=np.uint8)
                np.copyto(copy, source[offset : offset + n])  # without the GIL
                copies.append(copy)
            inband = mem[piece.start : piece.start + piece.size]
            try:
                out.append(pickle.loads(inband, buffers=copies))
            finally:
                inband.release()
    finally:
        del source  # no view may outlive the block's mapping (SharedMemory.close would refuse)
    return out
