"""The four local services: how each is prepared, started and asked whether it is ready.

Each service is a small object with ``prepare`` (create its folder and configuration once),
``command`` (what to run in the foreground), ``ready`` (a real request, never a sleep) and
``after_start`` (one-time work once it answers). The supervisor starts and stops them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from freshloop.core.defaults import is_loopback_host
from freshloop.core.exceptions import SetupError, StackError
from freshloop.core.settings import Settings
from freshloop.stack.folders import private_dir, secure_shared_dir
from freshloop.stack.redis_acl import admin_client, apply_acl, write_acl_file
from freshloop.stack.setup import find_postgres_bindir, jar_sets

__all__ = ["Service", "build_services"]

_DEBEZIUM_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
_ENV_PROVIDER = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
_CDC_PASSWORD_ENV = "FRESHLOOP_CDC_PASSWORD"  # noqa: S105 - a variable's name (connectors.config)
# The environment a server starts with (see Service.env)
_SERVER_ENV = frozenset({"PATH", "JAVA_HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ"})


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _kafka_cluster_id() -> str:
    """A random KRaft cluster id (22 url-safe base64 characters).

    Like Kafka's own generator it never starts with ``-``: such an id would be read as an
    option by the storage tool's argument parser.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class Service:
    """Base: a named server on one port, with its own folder under the state folder."""

    name: str
    port: int
    settings: Settings
    root: Path
    run_as: str | None = None
    extra_ports: tuple[int, ...] = field(default=())

    @property
    def host(self) -> str:
        return self.settings.stack_bind

    @property
    def group(self) -> str:
        """The name that selects it with others (the primaries of a Redis Cluster: redis)."""
        return self.name

    def prepare(self) -> None:
        private_dir(self.root)

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Only what a server needs to run (where programs are, the locale, Java): not the
        shell's whole environment, whose secrets a server could expose (Connect's ``${env:}``)."""
        return {k: v for k, v in os.environ.items() if k in _SERVER_ENV}

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def after_start(self) -> None:
        """One-time work once the service answers (e.g. create the database)."""

    def reconcile(self, echo: Callable[[str], None] | None = None) -> None:
        """Idempotent work on a service that was already running at ``stack up``."""

    @property
    def stop_signal(self) -> int:
        import signal

        return signal.SIGTERM


class Postgres(Service):
    """PostgreSQL with logical WAL for Debezium, its own data folder, TCP on loopback only."""

    @property
    def bindir(self) -> Path:
        found = find_postgres_bindir()
        if found is None:
            msg = "PostgreSQL server binaries not found: apt-get install -y postgresql"
            raise SetupError(msg)
        return found

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def stop_signal(self) -> int:
        import signal

        return signal.SIGINT  # "fast" shutdown: SIGTERM would wait for every client to leave

    def _as_owner(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, user=self.run_as, capture_output=True, text=True, check=False)

    def prepare(self) -> None:
        if self.root.parent != self.settings.home.resolve():
            secure_shared_dir(self.root.parent)  # the fallback folder under /var/tmp
        super().prepare()
        if self.run_as:
            subprocess.run(["chown", f"{self.run_as}:", str(self.root)], check=True)
            probe = self._as_owner(["test", "-w", str(self.root)])
            if probe.returncode != 0:
                msg = (
                    f"the '{self.run_as}' user cannot write {self.root}: give it access to the "
                    "folders above it, or set FRESHLOOP_HOME to a folder it can reach"
                )
                raise StackError(msg)
        if (self.data / "PG_VERSION").exists():
            return
        pwfile = self.root / ".pwfile"
        pwfile.write_text(self.settings.postgres_password.get_secret_value() + "\n")
        pwfile.chmod(0o600)
        if self.run_as:
            subprocess.run(["chown", f"{self.run_as}:", str(pwfile)], check=True)
        try:
            result = self._as_owner(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.settings.postgres_user,
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                ],
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            msg = f"initdb failed: {result.stderr.strip()[-2000:]}"
            raise StackError(msg)

    def command(self) -> list[str]:
        conf = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": "",
            "wal_level": "logical",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            # bounds the WAL a stopped connector's slot holds (the slot is invalidated past it)
            "max_slot_wal_keep_size": self.settings.wal_keep_size,
            "wal_writer_delay": "10ms",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "log_min_messages": "warning",
            "log_line_prefix": "%m [%p] ",
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for key, value in conf.items():
            args += ["-c", f"{key}={value}"]
        return args

    def ready(self) -> bool:
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-t", "1"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def after_start(self) -> None:
        import psycopg

        s = self.settings
        admin = s.postgres_conninfo().rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (s.postgres_db,)
            ).fetchone()
            if not exists:
                from psycopg import sql

                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(s.postgres_db)))


class Redis(Service):
    """Redis with the append-only file on, so features survive a restart, and no eviction;
    its users (writer, read-only reader, admin; ``default`` off) come from an ACL file."""

    @property
    def aclfile(self) -> Path:
        return self.root / "users.acl"

    def prepare(self) -> None:
        super().prepare()
        write_acl_file(self.aclfile, self.settings)

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--aclfile",
            str(self.aclfile),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.root),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",  # evicting a key loses state (feature_pipelines/loss.py)
            "noeviction",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]

    def ready(self) -> bool:
        import redis

        try:
            admin_client(self.settings, self.host, self.port, timeout=0.5).close()
        except (redis.RedisError, OSError):
            return False
        return True

    def after_start(self) -> None:
        self.reconcile()

    def reconcile(self, echo: Callable[[str], None] | None = None) -> None:
        """Bring the running Redis to the users of the settings (``stack up`` on a running
        stack: new or changed passwords, a Redis set up before it had users)."""
        client = admin_client(self.settings, self.host, self.port)
        try:
            apply_acl(client, self.settings, echo)
        finally:
            client.close()


class _Java(Service):
    """A JVM service whose classpath is the Kafka jar folder."""

    main_class = ""
    heap = "768m"

    def log4j_config(self) -> Path:
        path = self.root / "log4j2.properties"
        path.write_text(
            "status = warn\n"
            "appender.console.type = Console\n"
            "appender.console.name = STDOUT\n"
            "appender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = info\n"
            "rootLogger.appenderRef.stdout.ref = STDOUT\n"
            "logger.kafka.name = org.apache.kafka\nlogger.kafka.level = warn\n"
            "logger.state.name = state.change.logger\nlogger.state.level = warn\n"
            "logger.reflections.name = org.reflections\nlogger.reflections.level = error\n"
            "logger.connect.name = org.apache.kafka.connect.runtime\n"
            "logger.connect.level = info\n"
        )
        return path

    def java_args(self) -> list[str]:
        kafka_jars = jar_sets(self.settings.home)[0].target
        return [
            "java",
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.root}",
            f"-Dlog4j2.configurationFile={self.log4j_config()}",
            "-cp",
            f"{kafka_jars}/*",
            self.main_class,
        ]


class Kafka(_Java):
    """A single combined broker+controller KRaft node."""

    main_class = "kafka.Kafka"

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    def prepare(self) -> None:
        super().prepare()
        ctrl = self.settings.kafka_controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{ctrl}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{ctrl}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.root / "data"),
            "num.partitions": "4",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
        }
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        if (self.root / "data" / "meta.properties").exists():
            return
        cluster_id = _kafka_cluster_id()
        args = self.java_args()
        args[-1] = "kafka.tools.StorageTool"
        result = subprocess.run(
            [*args, "format", f"--cluster-id={cluster_id}", "-c", str(self.properties), "-g"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            msg = (
                f"formatting the Kafka log folder failed: {(result.stdout + result.stderr)[-2000:]}"
            )
            raise StackError(msg)

    def command(self) -> list[str]:
        return [*self.java_args(), str(self.properties)]

    def ready(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap})
        try:
            meta = admin.list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        return bool(meta.brokers)


class Connect(_Java):
    """A Kafka Connect distributed worker with the Debezium plugin on its plugin path."""

    main_class = "org.apache.kafka.connect.cli.ConnectDistributed"

    @property
    def properties(self) -> Path:
        return self.root / "connect-distributed.properties"

    def prepare(self) -> None:
        if not is_loopback_host(self.host):
            msg = (
                f"Kafka Connect's REST API has no authentication and creates connectors for "
                f"anyone who reaches it, so it listens on loopback only; FRESHLOOP_STACK_BIND="
                f"{self.host} is not loopback: set it to 127.0.0.1"
            )
            raise StackError(msg)
        super().prepare()
        plugins = jar_sets(self.settings.home)[1].target.parent
        props = {
            "bootstrap.servers": self.settings.kafka_bootstrap,
            "group.id": f"{self.settings.topic_prefix}-connect",
            "config.storage.topic": f"_{self.settings.topic_prefix}-connect-configs",
            "offset.storage.topic": f"_{self.settings.topic_prefix}-connect-offsets",
            "status.storage.topic": f"_{self.settings.topic_prefix}-connect-status",
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "offset.storage.partitions": "1",
            "status.storage.partitions": "1",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "false",
            "value.converter.schemas.enable": "false",
            "offset.flush.interval.ms": "1000",
            "listeners": f"http://{self.host}:{self.port}",
            "rest.advertised.host.name": self.host,
            "rest.advertised.port": str(self.port),
            "plugin.path": str(plugins),
            "plugin.discovery": "hybrid_warn",
            "producer.linger.ms": "1",
            "producer.compression.type": "none",
            "topic.creation.enable": "true",
            # Connector configs refer to secrets as ${env:NAME}: never stored in Kafka. The
            # provider reads only the connector's own variable (anyone who reaches the REST API
            # can write a config), and a connector may not override its clients' configs
            # (which could name other providers or login modules).
            "config.providers": "env",
            "config.providers.env.class": _ENV_PROVIDER,
            "config.providers.env.param.allowlist.pattern": f"^{_CDC_PASSWORD_ENV}$",
            "connector.client.config.override.policy": "None",
        }
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def command(self) -> list[str]:
        args = self.java_args()
        # the only ConfigProvider class any config in this JVM may instantiate (Kafka 3.8+)
        args[-1:-1] = [f"-Dorg.apache.kafka.automatic.config.providers={_ENV_PROVIDER}"]
        return [*args, str(self.properties)]

    def env(self) -> dict[str, str]:
        """The server's few variables and the one secret its connector reads."""
        return {
            **super().env(),
            _CDC_PASSWORD_ENV: self.settings.cdc_password.get_secret_value(),
        }

    def ready(self) -> bool:
        try:
            response = httpx.get(f"{self.settings.connect_url}/connector-plugins", timeout=2)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        return any(p.get("class") == _DEBEZIUM_CLASS for p in response.json())


def _postgres_root(home: Path, run_as: str | None) -> Path:
    """Postgres's folder: in the state folder, unless the server's user cannot reach it there."""
    root = home / "postgres"
    if run_as is None:
        return root
    probe = subprocess.run(["test", "-x", str(home)], user=run_as, check=False)
    if probe.returncode == 0:
        return root
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"freshloop-{digest}" / "postgres"  # noqa: S108 - FHS location


def _redis_services(settings: Settings, home: Path) -> list[Service]:
    """One Redis, or the primaries of a Redis Cluster (``redis_layout``)."""
    if settings.redis_layout == "cluster":
        from freshloop.stack.redis_cluster import cluster_services

        return list(cluster_services(settings, home))
    return [Redis("redis", settings.redis_port, settings, home / "redis")]


def build_services(settings: Settings) -> list[Service]:
    """The stack in start order; stop in reverse."""
    home = private_dir(settings.home.resolve())
    run_as = "postgres" if os.geteuid() == 0 else None
    pg_root = _postgres_root(home, run_as)
    return [
        Postgres("postgres", settings.postgres_port, settings, pg_root, run_as=run_as),
        *_redis_services(settings, home),
        Kafka(
            "kafka",
            settings.kafka_port,
            settings,
            home / "kafka",
            extra_ports=(settings.kafka_controller_port,),
        ),
        Connect("connect", settings.connect_port, settings, home / "connect"),
    ]
