"""The CDC password reaches Postgres as a SCRAM-SHA-256 verifier made by the client, never as
SQL text; the verifier follows RFC 5802/7677 and Postgres accepts a login with the password."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from feature_pipelines.definitions import tables_to_capture
from freshloop.core.db import SQL_DIR, init_database, sql_params
from freshloop.core.scram import scram_keys, scram_sha256_verifier
from freshloop.core.settings import Settings

_B64 = r"([A-Za-z0-9+/=]+)"
_VERIFIER = re.compile(rf"^SCRAM-SHA-256\$(\d+):{_B64}\${_B64}:{_B64}$")


def test_the_rfc_7677_exchange_checks_against_our_keys() -> None:
    """RFC 7677 section 3: user 'user', password 'pencil'. A server holding only our StoredKey
    and ServerKey accepts the client's proof and sends the signature the RFC shows."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    stored, server = scram_keys("pencil", salt, 4096)
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        "n=user,r=rOprNGfwEbeRWgbNEkqO,"
        f"r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        f"c=biws,r={nonce}"
    ).encode()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored
    server_signature = hmac.new(server, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == (
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    )


def test_verifier_format_and_fresh_salts() -> None:
    first = scram_sha256_verifier("s3cret-Ünïcode")
    match = _VERIFIER.match(first)
    assert match is not None, first
    iterations, salt, stored, server = match.groups()
    assert int(iterations) == 4096
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(stored)) == len(base64.b64decode(server)) == 32
    assert "s3cret" not in first
    assert scram_sha256_verifier("s3cret-Ünïcode") != first  # a new salt each time
    fixed = scram_sha256_verifier("x", salt=b"0" * 16, iterations=10)
    assert fixed == scram_sha256_verifier("x", salt=b"0" * 16, iterations=10)


def test_saslprep_maps_what_postgres_maps() -> None:
    """A non-ASCII space is a space and a soft hyphen is dropped before hashing (RFC 4013)."""
    salt = b"1" * 16
    assert scram_keys("a\u00a0b", salt, 10) == scram_keys("a b", salt, 10)
    assert scram_keys("ab\u00ad", salt, 10) == scram_keys("ab", salt, 10)


def test_the_sql_text_carries_a_verifier_not_the_password() -> None:
    password = f"clear-{uuid.uuid4().hex}"
    settings = Settings(cdc_password=SecretStr(password))
    params = sql_params(settings)
    text = (SQL_DIR / "003_cdc_access.sql").read_text()
    rendered = sql.SQL(text).format(**params).as_string(None)
    assert password not in rendered
    assert "SCRAM-SHA-256$4096:" in rendered


@pytest.mark.integration
def test_postgres_accepts_the_password_set_by_its_verifier(stack_settings: Settings) -> None:
    """A role of its own (the shared CDC role keeps its password for the running connector)."""
    role = f"cdc_scram_{uuid.uuid4().hex[:10]}"
    password = f"pw-{uuid.uuid4().hex}"
    settings = stack_settings.model_copy(
        update={"cdc_user": role, "cdc_password": SecretStr(password)}
    )
    owner = stack_settings.postgres_conninfo()
    try:
        init_database(settings, capture=tables_to_capture(settings))
        with psycopg.connect(owner, autocommit=True) as conn:
            stored = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
            ).fetchone()
        assert stored is not None and stored[0].startswith("SCRAM-SHA-256$4096:")
        conninfo = settings.postgres_conninfo(user=role, password=SecretStr(password))
        with psycopg.connect(conninfo, autocommit=True) as cdc:
            assert cdc.execute("SELECT current_user").fetchone() == (role,)
        wrong = settings.postgres_conninfo(user=role, password=SecretStr(password + "x"))
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(wrong, connect_timeout=5).close()
    finally:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
