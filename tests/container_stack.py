"""The second test backend: the same four services in containers, via testcontainers.

Needs a Docker engine (this project's CI machine has none, so CI uses the local backend).
Select it with ``FRESHLOOP_TEST_STACK=containers``; the images are those of docker-compose.yml.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from freshloop.core.settings import Settings


def container_backend(settings: Settings) -> Iterator[Settings]:
    try:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.network import Network
        from testcontainers.core.waiting_utils import wait_for_logs
    except ImportError as exc:  # pragma: no cover - only where Docker is used
        msg = "FRESHLOOP_TEST_STACK=containers needs: pip install testcontainers"
        raise RuntimeError(msg) from exc

    pg_password = settings.postgres_password.get_secret_value()
    cdc_password = settings.cdc_password.get_secret_value()
    connect_image = os.environ.get("FRESHLOOP_CONNECT_IMAGE", "debezium/connect:3.6.1.Final")
    with Network() as net:
        postgres = (
            DockerContainer("postgres:15")
            .with_network(net)
            .with_network_aliases("postgres")
            .with_env("POSTGRES_USER", settings.postgres_user)
            .with_env("POSTGRES_PASSWORD", pg_password)
            .with_env("POSTGRES_DB", settings.postgres_db)
            .with_command("postgres -c wal_level=logical -c max_replication_slots=10")
            .with_exposed_ports(5432)
        )
        redis = DockerContainer("redis:7").with_command("redis-server --appendonly yes")
        kafka = (
            DockerContainer("apache/kafka:4.3.0")
            .with_network(net)
            .with_network_aliases("kafka")
            .with_exposed_ports(9092)
        )
        with postgres, redis.with_exposed_ports(6379), kafka:
            wait_for_logs(postgres, "database system is ready to accept connections")
            wait_for_logs(kafka, "Kafka Server started")
            connect = (
                DockerContainer(connect_image)
                .with_network(net)
                .with_env("BOOTSTRAP_SERVERS", "kafka:9092")
                .with_env("GROUP_ID", f"{settings.topic_prefix}-connect")
                .with_env("CONFIG_STORAGE_TOPIC", f"_{settings.topic_prefix}-connect-configs")
                .with_env("OFFSET_STORAGE_TOPIC", f"_{settings.topic_prefix}-connect-offsets")
                .with_env("STATUS_STORAGE_TOPIC", f"_{settings.topic_prefix}-connect-status")
                .with_env("CONNECT_CONFIG_PROVIDERS", "env")
                .with_env(
                    "CONNECT_CONFIG_PROVIDERS_ENV_CLASS",
                    "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
                )
                .with_env("FRESHLOOP_CDC_PASSWORD", cdc_password)
                .with_exposed_ports(8083)
            )
            with connect:
                wait_for_logs(connect, "Finished starting connectors and tasks")
                host = postgres.get_container_host_ip()
                yield settings.model_copy(
                    update={
                        "postgres_dsn": (
                            f"postgresql://{settings.postgres_user}@{host}:"
                            f"{postgres.get_exposed_port(5432)}/{settings.postgres_db}"
                        ),
                        "redis_url": f"redis://{host}:{redis.get_exposed_port(6379)}/0",
                        "kafka_bootstrap": f"{host}:{kafka.get_exposed_port(9092)}",
                        "connect_url": f"http://{host}:{connect.get_exposed_port(8083)}",
                        "connector_database_host": "postgres",
                    }
                )
