"""Signed blobs: the signature is checked before anything is unpickled."""

from __future__ import annotations

import logging
import pickle

import pytest

from online_learning import signing
from online_learning.exceptions import BlobKindError, SignatureError, VersionMismatchError
from online_learning.signing import dumps_signed, loads_signed, read_header
from tests.online_learning.fixtures import KEY, OTHER_KEY

UNPICKLED: list[str] = []


class _Tripwire:
    """Records that it was unpickled; a blob holding one must never be loaded unverified."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (UNPICKLED.append, ("unpickled",))


def test_round_trip_and_header() -> None:
    blob = dumps_signed({"a": [1, 2]}, KEY, "thing", {"note": "x"})
    obj, header = loads_signed(blob, KEY, "thing")
    assert obj == {"a": [1, 2]}
    assert header["meta"] == {"note": "x"}
    assert header["river"] == signing.river.__version__
    assert read_header(blob, KEY)["kind"] == "thing"


def test_every_flipped_byte_is_refused_before_unpickling() -> None:
    UNPICKLED.clear()
    blob = dumps_signed(_Tripwire(), KEY, "thing")
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(SignatureError):
            loads_signed(bytes(tampered), KEY, "thing")
    assert UNPICKLED == []


def test_wrong_key_truncation_and_unsigned_pickle_refused() -> None:
    UNPICKLED.clear()
    blob = dumps_signed(_Tripwire(), KEY, "thing")
    for bad, key in [
        (blob, OTHER_KEY),
        (blob[:-1], KEY),
        (blob[:20], KEY),
        (b"", KEY),
        (pickle.dumps(_Tripwire()), KEY),
        (blob + b"x", KEY),
    ]:
        with pytest.raises(SignatureError):
            loads_signed(bad, key, "thing")
    assert UNPICKLED == []


def test_short_key_refused() -> None:
    with pytest.raises(SignatureError, match="16 bytes"):
        dumps_signed(1, b"short", "thing")


def test_other_kind_refused() -> None:
    with pytest.raises(BlobKindError, match="'thing'"):
        loads_signed(dumps_signed(1, KEY, "thing"), KEY, "other")


def test_river_version_mismatch_refused_or_warned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(signing.river, "__version__", "0.0.1")
    blob = dumps_signed([1], KEY, "thing")
    monkeypatch.undo()
    with pytest.raises(VersionMismatchError, match=r"river 0\.0\.1"):
        loads_signed(blob, KEY, "thing")
    with caplog.at_level(logging.WARNING, logger="online_learning.signing"):
        obj, _ = loads_signed(blob, KEY, "thing", on_version_mismatch="warn")
    assert obj == [1]
    assert "river_version_mismatch written=0.0.1" in caplog.text
