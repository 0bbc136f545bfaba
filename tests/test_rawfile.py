"""qrnn_lm.rawfile: the raw stream prepare writes and reads back in slices
behaves like the array it holds, and keeps no pages of it mapped."""
import numpy as np
import pytest

from qrnn_lm.errors import QrnnLmError
from qrnn_lm.rawfile import RawArray, RawWriter, npy_from


def raw_of(tmp_path, values, dtype=np.int32):
    w = RawWriter(str(tmp_path / "x.npy"), dtype)
    for part in np.array_split(np.asarray(values, dtype=dtype), 3):
        w.write(part)
    return w, w.close_raw()


def test_slices_and_items_match_the_array(tmp_path):
    ref = np.arange(1000, dtype=np.int32) * 7 - 300
    _, raw = raw_of(tmp_path, ref)
    assert isinstance(raw, RawArray) and len(raw) == 1000 and raw.shape == (1000,)
    for key in (slice(None), slice(0, 0), slice(10, 20), slice(990, 2000), slice(-5, None), slice(5, 3),
                slice(3, 100, 7), slice(None, None, -3)):
        np.testing.assert_array_equal(raw[key], ref[key])
    assert raw[0] == ref[0] and raw[-1] == ref[-1] and raw[np.int64(500)] == ref[500]
    np.testing.assert_array_equal(np.asarray(raw), ref)
    np.testing.assert_array_equal(np.bincount(raw[0:1000] + 300), np.bincount(ref + 300))
    with pytest.raises(IndexError):
        raw[1000]
    with pytest.raises(TypeError):
        raw[[1, 2]]


def test_a_raw_file_cut_short_is_one_sentence(tmp_path):
    _, raw = raw_of(tmp_path, np.arange(100))
    with open(raw.path, "r+b") as f:
        f.truncate(40)
    with pytest.raises(QrnnLmError, match="ended early"):
        raw[0:100]


def test_finish_writes_the_mapped_npy_and_removes_the_raw_file(tmp_path):
    ref = np.arange(50, dtype=np.int32)
    w, raw = raw_of(tmp_path, ref)
    raw.close()
    w.finish(lambda c: (c * 2).astype(np.int64))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), ref * 2)
    assert not (tmp_path / "x.npy.tmp").exists()
    _, raw = raw_of(tmp_path, ref)
    npy_from(raw, str(tmp_path / "y.npy"), lambda c: c.astype(np.float32) / 2)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), ref / 2)


def test_an_empty_stream(tmp_path):
    w = RawWriter(str(tmp_path / "e.npy"), np.int32)
    assert len(w.close_raw()) == 0
    w.finish()
    assert np.load(tmp_path / "e.npy").shape == (0,)
