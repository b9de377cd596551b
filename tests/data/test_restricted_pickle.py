"""Tests of sdis_tf/data/restricted_pickle.py: data pickles load, code in them never runs.

Each malicious payload creates a marker file when it runs; it is put in a
few-shot pickle and in the `metadata` member of a dSprites-layout npz, and each
load must be refused with one line naming the file and the global, the marker
never created.
"""

import collections
import io
import os
import pickle
import shlex
import subprocess
import time
import zipfile

import numpy as np
import pytest
from numpy.testing._private.utils import runstring

from sdis_tf.data import factors, fewshot, restricted_pickle
from sdis_tf.data.errors import DataFileError

DSPRITES_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")


class _Reduce:
    """Pickles as the call `func(*args)`, which a plain `pickle.load` makes."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _create(marker) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _getattr_chain(marker) -> bytes:
    """`getattr(__import__('os'), 'system')('touch marker')` in protocol-0 opcodes."""
    command = f"touch {shlex.quote(str(marker))}".encode()
    return (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V"
            + command + b"\ntR.")


def _dotted_chain(marker) -> bytes:
    """`os.path.os.system('touch marker')`: a protocol-4 global walking attributes."""
    command = f"touch {shlex.quote(str(marker))}".encode()
    return b"\x80\x04cos\npath.os.system\n(V" + command + b"\ntR."


# name -> (marker -> pickle bytes, the global the refusal names, seconds the effect may lag)
PAYLOADS = {
    "os.system": (lambda m: pickle.dumps(
        _Reduce(os.system, f"touch {shlex.quote(str(m))}")), "posix.system", 0.0),
    "subprocess.Popen": (lambda m: pickle.dumps(
        _Reduce(subprocess.Popen, ["touch", str(m)]), protocol=4), "subprocess.Popen", 1.0),
    "eval": (lambda m: pickle.dumps(_Reduce(eval, _create(m)), protocol=2),
             "__builtin__.eval", 0.0),
    "exec": (lambda m: pickle.dumps(_Reduce(exec, _create(m)), protocol=5),
             "builtins.exec", 0.0),
    "getattr": (_getattr_chain, "builtins.getattr", 0.0),
    "dotted getattr": (_dotted_chain, "os.path.os.system", 0.0),
    "numpy runstring": (lambda m: pickle.dumps(_Reduce(runstring, _create(m), {})),
                        "numpy.testing._private.utils.runstring", 0.0),
}


def _ran(marker, lag: float) -> bool:
    """Whether the payload's marker exists, waiting `lag` seconds for a child process."""
    deadline = time.monotonic() + lag
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return marker.exists()


def _assert_refused(load, marker, lag, source, global_name) -> None:
    try:
        load()
        error = None
    except Exception as raised:  # any outcome: whether the payload ran is checked first
        error = raised
    assert not _ran(marker, lag), f"the payload ran: it created {marker}"
    assert isinstance(error, restricted_pickle.ForbiddenGlobalError), repr(error)
    assert isinstance(error, DataFileError)          # a run exits 2 with this one line
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"refusing to load {source}: pickle references {global_name},")
    assert error.global_name == global_name


def _dsprites(path, metadata_pickle: bytes) -> None:
    """A dSprites-layout npz whose `metadata` member holds the given pickle bytes."""
    values = np.array([[1.0, shape, 0.5, 0.0, x, 0.0] for shape in (1.0, 2.0, 3.0)
                       for x in (0.0, 1.0)])
    imgs = np.random.default_rng(0).integers(0, 2, (len(values), 4, 4), dtype=np.uint8)
    np.savez(path, imgs=imgs, latents_values=values, latents_classes=values.astype(np.int64))
    with zipfile.ZipFile(path, "a") as archive, archive.open("metadata.npy", "w") as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "|O", "fortran_order": False, "shape": ()})
        member.write(metadata_pickle)


@pytest.mark.parametrize("name", PAYLOADS)
def test_payload_in_a_fewshot_pickle_is_refused(tmp_path, name):
    make, global_name, lag = PAYLOADS[name]
    marker = tmp_path / "marker"
    path = tmp_path / "CIFAR_FS_val.pickle"
    path.write_bytes(make(marker))
    _assert_refused(lambda: fewshot.load_split("CIFAR-FS", tmp_path, "val"), marker, lag,
                    repr(str(path)), global_name)


@pytest.mark.parametrize("name", PAYLOADS)
def test_payload_in_dsprites_metadata_is_refused(tmp_path, name):
    make, global_name, lag = PAYLOADS[name]
    marker = tmp_path / "marker"
    path = tmp_path / "dsprites.npz"
    _dsprites(path, make(marker))
    _assert_refused(lambda: factors.load_factor_dataset(path), marker, lag,
                    f"{str(path)!r} member 'metadata'", global_name)


def test_payload_nested_in_the_record_is_refused(tmp_path):
    """The payload deep inside a real few-shot record, after a valid array."""
    marker = tmp_path / "marker"
    record = {"data": np.zeros((2, 32, 32, 3), np.uint8),
              "labels": [0, _Reduce(os.system, f"touch {shlex.quote(str(marker))}")]}
    path = tmp_path / "FC100_test.pickle"
    path.write_bytes(pickle.dumps(record, protocol=2))
    _assert_refused(lambda: fewshot.load_split("FC100", tmp_path, "test"), marker, 0.0,
                    repr(str(path)), "posix.system")


@pytest.mark.parametrize("protocol", [2, 4])
def test_dsprites_metadata_pickle_loads(tmp_path, protocol):
    """The same npz builder with dSprites' real metadata: the names come out."""
    metadata = {"latents_names": DSPRITES_NAMES, "title": "dSprites",
                "latents_sizes": np.array([1, 3, 1, 1, 2, 1]),
                "latents_possible_values": {"posX": np.array([0.0, 1.0])}}
    _dsprites(tmp_path / "dsprites.npz", pickle.dumps(np.array(metadata, object), protocol))
    data = factors.load_factor_dataset(tmp_path / "dsprites.npz")
    assert data.factor_names == ("shape", "posX") and data.layout == "dsprites"


def test_dsprites_metadata_that_is_not_a_dict_is_named(tmp_path):
    _dsprites(tmp_path / "dsprites.npz", pickle.dumps(np.array([1, 2], object)))
    with pytest.raises(factors.FactorFileError, match="'metadata' does not hold a dict"):
        factors.load_factor_dataset(tmp_path / "dsprites.npz")


def _round_trip(obj, protocol, encoding="ASCII"):
    return restricted_pickle.load(io.BytesIO(pickle.dumps(obj, protocol=protocol)), "<bytes>",
                                  encoding=encoding)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_and_plain_containers_round_trip(protocol):
    record = {
        "uint8": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "strided": np.arange(10)[::3],
        "objects": np.array({"a": (1, "x")}, object),
        "text": np.array(["ab", "c"]), "bytes_array": np.array([b"ab"]),
        "structured": np.zeros(2, [("a", "<f4"), ("b", "<i8")]),
        "scalars": [np.float64(1.5), np.int64(-3), np.bool_(True), np.dtype("<f4")],
        "plain": [{1, 2}, frozenset("ab"), 1 + 2j, b"xy", b"", bytearray(b"z"), None, 1.5,
                  (True, "s"), collections.OrderedDict(a=1)],
    }
    loaded = _round_trip(record, protocol)
    assert loaded.keys() == record.keys()
    for key in ("uint8", "fortran", "strided", "text", "bytes_array", "structured"):
        np.testing.assert_array_equal(loaded[key], record[key])
        assert loaded[key].dtype == record[key].dtype
    assert loaded["fortran"].flags.f_contiguous
    assert loaded["objects"][()] == {"a": (1, "x")}
    assert loaded["scalars"] == record["scalars"]
    assert [type(v) for v in loaded["scalars"]] == [type(v) for v in record["scalars"]]
    assert loaded["plain"] == record["plain"]
    assert type(loaded["plain"][-1]) is collections.OrderedDict


def test_bytes_only_through_latin1():
    """`_codecs.encode` is allowed for the latin-1 bytes of protocol-2 pickles, nothing else."""
    assert _round_trip(b"\xff\x00", 2) == b"\xff\x00"
    rot13 = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(pickle.UnpicklingError, match="data pickles use latin-1"):
        restricted_pickle.load(io.BytesIO(rot13), "<bytes>")


def test_python2_numpy_1_pickle_loads_with_latin1():
    """numpy 1.x names (numpy.core.multiarray) and Python 2 str bytes, as old files have."""
    data = np.array([0, 128, 255, 7, 200, 3], np.uint8)
    blob = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b"
            b"\x87R(K\x01K\x06\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ"
            b"\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x06" + data.tobytes() + b"tb.")
    with pytest.raises(UnicodeDecodeError):
        restricted_pickle.load(io.BytesIO(blob), "<bytes>")
    np.testing.assert_array_equal(
        restricted_pickle.load(io.BytesIO(blob), "<bytes>", encoding="latin1"), data)
