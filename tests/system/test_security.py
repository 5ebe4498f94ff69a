"""Security through the real stack: the CDC role's privileges, secrets kept out of logs and
command lines, loopback-only listeners, and model pickles loaded only once signed."""

from __future__ import annotations

import ipaddress
import os
import pickle
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from freshloop.core.settings import Settings
from freshloop.simulate import WorkloadConfig, run_simulation
from freshloop.stack import Stack
from tests.redis_layout import client_for
from tests.system.fixtures import WORKLOAD, System, read_to_end, settings_env, wait_for

pytestmark = pytest.mark.integration

PACKAGES = ("freshloop", "connectors", "feature_pipelines", "online_learning", "drift")
ROOT = Path(__file__).resolve().parents[2]


# ---- the CDC role ------------------------------------------------------------------------------
def test_cdc_role_has_only_what_it_needs(pipeline: Settings) -> None:
    with psycopg.connect(pipeline.postgres_conninfo(), autocommit=True) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication, "
            "rolbypassrls FROM pg_roles WHERE rolname = %s",
            (pipeline.cdc_user,),
        ).fetchone()
        grants = set(
            conn.execute(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = %s AND table_name NOT LIKE 'probe\\_%%'",
                (pipeline.cdc_user,),
            ).fetchall()
        )
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
            "WHERE r.rolname = %s",
            (pipeline.cdc_user,),
        ).fetchone()
        member_of = conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            "WHERE r.rolname = %s",
            (pipeline.cdc_user,),
        ).fetchone()
    assert role is not None
    superuser, createdb, createrole, _inherit, replication, bypassrls = role
    assert replication and not (superuser or createdb or createrole or bypassrls)
    assert grants == {
        ("payments", "SELECT"),
        ("payment_outcomes", "SELECT"),
        ("freshloop_signal", "SELECT"),
        ("freshloop_signal", "INSERT"),
        ("freshloop_heartbeat", "INSERT"),
    }
    assert owned == (0,) and member_of == (0,)
    # and what it cannot do, tried as the role itself
    cdc = pipeline.postgres_conninfo(user=pipeline.cdc_user, password=pipeline.cdc_password)
    with psycopg.connect(cdc, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM payments").fetchone() is not None
        for statement in (
            "SELECT * FROM training_examples LIMIT 1",
            "SELECT * FROM model_registry LIMIT 1",
            "UPDATE payments SET amount = amount WHERE false",
            "DELETE FROM payment_outcomes WHERE false",
            "INSERT INTO customers (email, country) VALUES ('x', 'DE')",
            "CREATE TABLE public.cdc_may_not_create (x int)",
            "SELECT * FROM freshloop_heartbeat LIMIT 1",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


# ---- secrets -----------------------------------------------------------------------------------
def _secrets(settings: Settings) -> dict[str, str]:
    """The secrets to look for. One equal to a name that logs show anyway (the local default
    Postgres password is the database's name) cannot be told apart: it is left out, said so."""
    names = {settings.postgres_db, settings.postgres_user, settings.topic_prefix, settings.cdc_user}
    found = {
        "postgres_password": settings.postgres_password.get_secret_value(),
        "cdc_password": settings.cdc_password.get_secret_value(),
        "model_signing_key": settings.model_signing_key.get_secret_value(),
        "redis_password": settings.redis_password.get_secret_value(),
        "redis_read_password": settings.redis_read_password.get_secret_value(),
        "redis_admin_password": settings.redis_admin_password.get_secret_value(),
    }
    for name, value in list(found.items()):
        if value in names:
            print(f"{name} equals a name every log shows: not checked (set a real one)")
            del found[name]
    return found


def _leaks(text: str, secret: str) -> bool:
    """Whether ``secret`` shows in ``text``. A short or common secret (the local default Postgres
    password is the project's name) is looked for where a password would be written."""
    if len(secret) >= 12:
        return secret in text
    forms = (f":{secret}@", f"password={secret}", f"'{secret}'", f'"{secret}"', f"={secret}\n")
    return any(form.lower() in text.lower() for form in forms)


def _assert_clean(text: str, secrets: dict[str, str], where: str) -> None:
    for name, secret in secrets.items():
        assert not _leaks(text, secret), f"{name} appears in {where}"


def test_secrets_never_appear_in_logs_or_command_lines(system: System, tmp_path: Path) -> None:
    settings = system.settings.model_copy(
        update={"model_signing_key": SecretStr(f"signing-{uuid.uuid4().hex}")}
    )
    secrets = _secrets(settings)
    env = settings_env(settings)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "freshloop.app.cli", "--log-level", "DEBUG", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return done.stdout + done.stderr

    captured = [
        cli("db", "init"),
        cli("connectors", "apply"),
        cli("connectors", "status"),
        cli("stack", "status"),
        cli("features", "verify", "--sample", "5", "--wait", "0"),
        cli("learn", "status"),
        cli("connectors", "validate"),
    ]
    system = System(settings, tmp_path, log_level="DEBUG")
    system.start(serve=1)
    cmdlines = [Path(f"/proc/{p.pid}/cmdline").read_bytes() for p in system.procs()]
    run_simulation(settings, WORKLOAD, 3)
    system.stop()
    captured.append(system.logs())
    for text in captured:
        _assert_clean(text, secrets, "a freshloop log")
    assert " DEBUG " in system.logs()  # the most verbose logs were really captured
    stack = Stack(settings)
    for svc in stack.services:
        pid = stack.pid_of(svc)
        if pid is not None:
            cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        log = stack.log_path(svc.name)
        if log.exists():
            _assert_clean(log.read_text(errors="replace"), secrets, f"the {svc.name} log")
    for cmdline in cmdlines:
        _assert_clean(cmdline.decode(errors="replace"), secrets, "a command line")
    # Connect stores connector configs in a Kafka topic: it must hold the reference, not the value
    records = read_to_end(settings, f"_{settings.topic_prefix}-connect-configs")
    configs = "\n".join((m.value() or b"").decode(errors="replace") for m in records)
    assert "${env:FRESHLOOP_CDC_PASSWORD}" in configs
    _assert_clean(configs, secrets, "Connect's config topic")


# ---- loopback --------------------------------------------------------------------------------
def _listeners() -> dict[str, list[tuple[str, int]]]:
    """Listening TCP sockets: inode -> [(address, port)], from /proc/net/tcp and tcp6."""
    out: dict[str, list[tuple[str, int]]] = {}
    for name, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            addr = str(ipaddress.ip_address(raw)) if width == 8 else _v6(raw)
            out.setdefault(fields[9], []).append((addr, int(hex_port, 16)))
    return out


def _v6(raw: bytes) -> str:
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)


def _loopback(addr: str) -> bool:
    return ipaddress.ip_address(addr).is_loopback


def _sockets_of(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    return inodes


def test_every_service_listens_on_loopback_only(pipeline: Settings, tmp_path: Path) -> None:
    s = pipeline
    ports = {
        "postgres": s.postgres_port,
        "redis": s.redis_port,
        "kafka": s.kafka_port,
        "kafka controller": s.kafka_controller_port,
        "connect REST": s.connect_port,
    }
    if s.redis_layout == "cluster":  # every primary of the Redis Cluster, and its cluster bus
        cluster = client_for(s)
        for node in cluster.get_primaries():
            ports[f"redis primary {node.name}"] = int(node.port)
            ports[f"redis primary {node.name} bus"] = int(node.port) + 10_000
        cluster.close()
    listeners = _listeners()
    by_port: dict[int, list[str]] = {}
    for sockets in listeners.values():
        for addr, port in sockets:
            by_port.setdefault(port, []).append(addr)
    for name, port in ports.items():
        assert by_port.get(port), f"nothing listens on the {name} port {port}"
        assert all(_loopback(a) for a in by_port[port]), f"{name} listens on {by_port[port]}"
    # every listening socket of the stack's own processes (e.g. no JMX or debug port open)
    stack = Stack(s)
    pids = {svc.name: stack.pid_of(svc) for svc in stack.services}
    # and the metrics endpoint of a pipeline process
    metrics_port = 20_000 + os.getpid() % 20_000
    proc_settings = s.model_copy(
        update={"metrics_port": metrics_port, "redis_namespace": f"t{uuid.uuid4().hex[:8]}"}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "freshloop.app.cli", "features", "run"],
        env=settings_env(proc_settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: metrics_port in {p for v in _listeners().values() for _, p in v},
            30,
            "the metrics endpoint",
        )
        pids["features run"] = proc.pid
        listeners = _listeners()
        checked = 0
        for name, pid in pids.items():
            if pid is None:
                continue  # a server this stack did not start: its ports were checked above
            for inode in _sockets_of(pid) & set(listeners):
                for addr, port in listeners[inode]:
                    checked += 1
                    assert _loopback(addr), f"{name} (pid {pid}) listens on {addr}:{port}"
        assert checked >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---- model pickles -----------------------------------------------------------------------------
_REFUSED = re.compile(r"SignatureError|signature does not match|not a Freshloop signed blob")


class _Tripwire:
    """Unpickling this creates a folder: proof that an unverified pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_pickles_are_unpickled_only_in_the_signature_checker() -> None:
    pattern = re.compile(
        r"\b(pickle\.loads?|cloudpickle|dill\.|joblib\.load|marshal\.loads|shelve\.open|"
        r"torch\.load|Unpickler)\b"
    )
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and not line.lstrip().startswith("#"):
                    found.append(f"{path.relative_to(ROOT)}:{n}")
    assert len(found) == 1 and found[0].startswith("online_learning/signing.py:"), found


@pytest.mark.parametrize("forgery", ["unsigned pickle", "signed with another key"])
def test_a_forged_champion_is_refused_before_unpickling(
    system: System, tmp_path: Path, forgery: str
) -> None:
    from online_learning.signing import dumps_signed

    settings = system.settings
    marker = tmp_path / "unpickled"
    payload = _Tripwire(marker)
    if forgery == "unsigned pickle":
        blob = pickle.dumps(payload)
    else:
        blob = dumps_signed(payload, f"another-key-{uuid.uuid4().hex}".encode(), "model")
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO model_registry (namespace, version, status, promoted_at, blob, "
            "river_version, spec) VALUES (%s, 'forged', 'champion', %s, %s, '0', '[]')",
            (settings.namespace, datetime.now(UTC), blob),
        )
    learner = system.spawn("learner", "learn", "run")
    scorer = system.spawn("serve", "learn", "serve")
    # new payments make the scorer load the champion
    writes = threading.Thread(
        target=run_simulation,
        args=(settings, WorkloadConfig(rate=5, customers=5, merchants=2, seed=3), 15),
        daemon=True,
    )
    writes.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _REFUSED.search(learner.log()) and _REFUSED.search(scorer.log()):
            break
        time.sleep(0.5)
    learner.stop(timeout=10)
    scorer.stop(timeout=10)
    writes.join(timeout=30)
    assert not marker.exists(), "a forged pickle was unpickled"
    for proc in (learner, scorer):
        assert _REFUSED.search(proc.log()), proc.log()[-2000:]
