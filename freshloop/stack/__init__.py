"""The local stack: Postgres, Redis, Kafka (KRaft) and Kafka Connect with Debezium, no Docker."""

from freshloop.stack.supervisor import ServiceStatus, Stack

__all__ = ["ServiceStatus", "Stack"]
