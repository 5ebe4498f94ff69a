"""SCRAM-SHA-256 password verifiers (RFC 5802, RFC 7677), computed on the client.

``CREATE/ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'`` stores a verifier Postgres can check a
login against but cannot turn back into the password, so the clear password never travels as
SQL text (nor reaches ``log_statement``, ``pg_stat_statements`` or ``pg_stat_activity``).

>>> v = scram_sha256_verifier("pencil", salt=bytes(16), iterations=4096)
>>> v.startswith("SCRAM-SHA-256$4096:AAAAAAAAAAAAAAAAAAAAAA==$")
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

__all__ = ["scram_keys", "scram_sha256_verifier"]

DEFAULT_ITERATIONS = 4096  # Postgres's scram_iterations default
_SALT_BYTES = 16


def _saslprep(password: str) -> bytes:
    """The password as Postgres hashes it: SASLprep (RFC 4013) when it applies, else the raw
    UTF-8 bytes, as Postgres does for a password SASLprep refuses."""
    raw = password.encode()
    if password.isascii():
        return raw
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    text = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if not text or any(check(c) for c in text for check in prohibited):
        return raw
    if any(stringprep.in_table_d1(c) for c in text):  # bidi rule (RFC 3454 section 6)
        if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
            return raw
        if any(stringprep.in_table_d2(c) for c in text):
            return raw
    return text.encode()


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """``(StoredKey, ServerKey)`` of RFC 5802 section 3 with SHA-256."""
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64), the form
    Postgres stores in ``pg_authid.rolpassword``; a fresh random salt unless one is given."""
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    stored, server = scram_keys(password, salt, iterations)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"
