"""Arrays on disk that prepare writes and reads in chunks: a 1-D ``.npy``
written with plain file writes (``write_npy``), a raw file appended to while
its length is unknown (``RawWriter``), read back slice by slice
(``RawArray``), and a ``.npy`` written from a raw file through a mapping
(``npy_from``).  Memory stays flat whatever the length."""
from __future__ import annotations

import os

import numpy as np

from .errors import QrnnLmError
from .rundir import writing as _writing

COPY_CHUNK = 1 << 22


def write_npy(path: str, n: int, dtype, chunks) -> None:
    """Write a 1-D .npy of ``n`` items from an iterable of arrays with plain
    file writes (a full disk is then an OSError, never a crash in a memory map)."""
    dtype = np.dtype(dtype)
    with _writing(path), open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                "shape": (int(n),)})
        written = 0
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            f.write(chunk.tobytes())
            written += len(chunk)
        assert written == n, (path, written, n)


class RawWriter:
    """Append numpy arrays to a raw file, then turn it into a .npy (the
    length is unknown until the stream ends)."""

    def __init__(self, path: str, dtype):
        self.path, self.dtype, self.n = path, np.dtype(dtype), 0
        with _writing(path + ".tmp"):
            self._f = open(path + ".tmp", "wb")

    def write(self, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, dtype=self.dtype)
        with _writing(self.path + ".tmp"):
            self._f.write(a.tobytes())
        self.n += len(a)

    def close_raw(self) -> "RawArray | np.ndarray":
        with _writing(self.path + ".tmp"):
            self._f.close()
        if self.n == 0:
            return np.zeros(0, dtype=self.dtype)
        return RawArray(self.path + ".tmp", self.dtype, self.n)

    def finish(self, transform=None) -> None:
        """Write ``path`` as .npy from the raw data (optionally mapped by
        ``transform(chunk) -> array``) and delete the raw file."""
        raw = self.close_raw()
        npy_from(raw, self.path, transform or (lambda c: c))
        if isinstance(raw, RawArray):
            raw.close()
        os.remove(self.path + ".tmp")


class RawArray:
    """A raw file of ``n`` items as a read-only 1-D array whose slices are
    read from the file on demand.  Not a memory map: the pages of a mapped
    file that a pass has touched count in the process's resident memory
    until the map closes, so a pass over a billion-token stream would look
    (in ``top``, to a container's memory limit) like 4 GB held; here each
    slice is an ordinary array, freed when its chunk is done."""

    def __init__(self, path: str, dtype, n: int):
        self.path, self.dtype, self.n = path, np.dtype(dtype), int(n)
        self.shape = (self.n,)
        self._f = open(path, "rb")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.n if key < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(f"index {key} is out of bounds for a stream of {self.n}")
            return self[i:i + 1][0]
        if not isinstance(key, slice):
            raise TypeError("a raw stream supports integer and slice indexing only")
        start, stop, step = key.indices(self.n)
        count = max(0, stop - start)
        if step != 1:
            return self[start:stop][::step] if step > 0 else np.asarray(self[:])[key]
        self._f.seek(start * self.dtype.itemsize)
        a = np.fromfile(self._f, dtype=self.dtype, count=count)
        if len(a) != count:
            raise QrnnLmError(f"{self.path} ended early (the disk or another process changed it); "
                              "prepare again.")
        return a

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)

    def close(self) -> None:
        self._f.close()

    def __del__(self):
        try:
            self._f.close()
        except Exception:
            pass


def npy_from(raw, path, transform):
    dtype = transform(raw[:0]).dtype
    write_npy(path, len(raw), dtype,
               (transform(np.asarray(raw[s:s + COPY_CHUNK]))
                for s in range(0, len(raw), COPY_CHUNK)))
