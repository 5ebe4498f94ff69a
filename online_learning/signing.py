"""Signed pickles: River objects persist as pickle, and pickle is only ever loaded once signed.

Blob layout (all integers big-endian)::

    b"FLS1" | HMAC-SHA256 (32 bytes) | header length (4 bytes) | header (UTF-8 JSON) | payload

The HMAC, keyed with the configured secret, is computed over the magic, the header length, the
header and the pickled payload. ``loads_signed``
checks the length, the magic and the HMAC FIRST (constant-time compare) and only then parses the
header and unpickles. The header records ``kind`` (what the payload is), the ``river`` and
``python`` versions that wrote it, and free metadata.

River version policy: a blob written by another River version is refused with
``VersionMismatchError`` by default (``on_version_mismatch="refuse"``), because River pickles
reference private classes that move between releases and may load into silently wrong models.
``"warn"`` loads it anyway and logs a warning, for a deliberate, tested upgrade.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import pickle
import platform
import struct
from typing import Any, Literal

import river

from online_learning.exceptions import BlobKindError, SignatureError, VersionMismatchError

__all__ = ["VersionPolicy", "dumps_signed", "loads_signed", "read_header"]

log = logging.getLogger(__name__)

VersionPolicy = Literal["refuse", "warn"]

_MAGIC = b"FLS1"
_MAC_LEN = 32
_LEN = struct.Struct(">I")
_MIN_LEN = len(_MAGIC) + _MAC_LEN + _LEN.size


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < 16:
        msg = "the signing key must be at least 16 bytes; set a long random model signing secret"
        raise SignatureError(msg)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _MAGIC + body, hashlib.sha256).digest()


def dumps_signed(obj: object, key: bytes, kind: str, meta: dict[str, Any] | None = None) -> bytes:
    """Pickle ``obj`` and sign it with ``key``; ``kind`` names what it is for ``loads_signed``."""
    _check_key(key)
    header = {
        "format": 1,
        "kind": kind,
        "river": river.__version__,
        "python": platform.python_version(),
        "meta": meta or {},
    }
    header_bytes = json.dumps(header, sort_keys=True).encode()
    body = _LEN.pack(len(header_bytes)) + header_bytes + pickle.dumps(obj, protocol=5)
    return _MAGIC + _mac(key, body) + body


def _verified_parts(blob: bytes, key: bytes) -> tuple[dict[str, Any], bytes]:
    """Header and payload of a blob whose signature checks out; raises before parsing otherwise."""
    _check_key(key)
    if len(blob) < _MIN_LEN or blob[: len(_MAGIC)] != _MAGIC:
        msg = "not a Freshloop signed blob (bad magic or too short); refusing to load it"
        raise SignatureError(msg)
    mac = blob[len(_MAGIC) : len(_MAGIC) + _MAC_LEN]
    body = blob[len(_MAGIC) + _MAC_LEN :]
    if not hmac.compare_digest(mac, _mac(key, body)):
        msg = "blob signature does not match: it was tampered with or signed with another key"
        raise SignatureError(msg)
    (header_len,) = _LEN.unpack_from(body)
    header_end = _LEN.size + header_len
    header = json.loads(body[_LEN.size : header_end])
    return header, body[header_end:]


def read_header(blob: bytes, key: bytes) -> dict[str, Any]:
    """The verified header of a blob (kind, versions, metadata) without unpickling it."""
    header, _ = _verified_parts(blob, key)
    return header


def loads_signed(
    blob: bytes, key: bytes, kind: str, on_version_mismatch: VersionPolicy = "refuse"
) -> tuple[object, dict[str, Any]]:
    """The object and header of a signed blob, once its signature, kind and River version pass."""
    header, payload = _verified_parts(blob, key)
    if header.get("kind") != kind:
        msg = f"blob holds a {header.get('kind')!r}, expected a {kind!r}; check the file given"
        raise BlobKindError(msg)
    written = header.get("river")
    if written != river.__version__:
        msg = (
            f"blob was written by river {written}, this process runs river {river.__version__}; "
            "retrain or re-export the model under this version"
        )
        if on_version_mismatch == "refuse":
            raise VersionMismatchError(msg)
        log.warning("river_version_mismatch written=%s running=%s", written, river.__version__)
    # Safe: the payload's HMAC was verified above with the configured secret.
    return pickle.loads(payload), header  # noqa: S301
