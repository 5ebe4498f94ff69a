"""Stage 1: Debezium's Postgres connector on Kafka Connect, managed over Connect's REST API."""

from connectors.client import ApplyResult, ConnectClient, snapshot_signal
from connectors.config import LEARNING_TABLES, apply_connector, captured_tables, render_config
from connectors.exceptions import ConnectError, ConnectorFailedError, ConnectorValidationError

__all__ = [
    "LEARNING_TABLES",
    "ApplyResult",
    "ConnectClient",
    "ConnectError",
    "ConnectorFailedError",
    "ConnectorValidationError",
    "apply_connector",
    "captured_tables",
    "render_config",
    "snapshot_signal",
]
