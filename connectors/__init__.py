"""Stage 1: Debezium's Postgres connector on Kafka Connect, managed over Connect's REST API."""

from connectors.client import ApplyResult, ConnectClient, snapshot_signal
from connectors.config import CAPTURED_TABLES, apply_connector, render_config
from connectors.exceptions import ConnectError, ConnectorFailedError, ConnectorValidationError

__all__ = [
    "CAPTURED_TABLES",
    "ApplyResult",
    "ConnectClient",
    "ConnectError",
    "ConnectorFailedError",
    "ConnectorValidationError",
    "apply_connector",
    "render_config",
    "snapshot_signal",
]
