"""A small client for Kafka Connect's REST API and the connector lifecycle built on it."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from connectors.exceptions import ConnectError, ConnectorFailedError, ConnectorValidationError

__all__ = ["ApplyResult", "ConnectClient", "snapshot_signal"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` did: created, updated or unchanged, and the final state."""

    name: str
    action: str
    state: str


class ConnectClient:
    """Kafka Connect REST calls; every failure becomes a one-line ``ConnectError``."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConnectClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport -------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        try:
            response = self._http.request(
                method,
                path,
                content=None if body is None else orjson.dumps(body),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            msg = f"Kafka Connect is unreachable at {self.url} ({type(exc).__name__}: {exc})"
            raise ConnectError(msg) from exc
        if response.status_code in ok:
            return None
        if response.status_code >= 400:
            try:
                detail = response.json().get("message", response.text)
            except ValueError:
                detail = response.text
            msg = f"Kafka Connect {method} {path} answered {response.status_code}: {detail}"
            raise ConnectError(msg)
        return response.json() if response.content else None

    # ---- reads -----------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/")
        return result

    def connectors(self) -> list[str]:
        return list(self._call("GET", "/connectors"))

    def config(self, name: str) -> dict[str, str] | None:
        try:
            result: dict[str, str] = self._call("GET", f"/connectors/{name}/config")
        except ConnectError as exc:
            if "answered 404" in str(exc):
                return None
            raise
        return result

    def status(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/connectors/{name}/status")
        return result

    # ---- validation ------------------------------------------------------------------
    def validate(self, config: dict[str, str]) -> dict[str, list[str]]:
        """Connect's own validation: ``{field: [errors]}``, empty when valid."""
        plugin = config["connector.class"].rsplit(".", 1)[-1]
        answer = self._call("PUT", f"/connector-plugins/{plugin}/config/validate", config)
        errors: dict[str, list[str]] = {}
        for item in answer.get("configs", []):
            value = item.get("value") or {}
            if value.get("errors"):
                errors[value["name"]] = list(dict.fromkeys(value["errors"]))
        return errors

    # ---- lifecycle -------------------------------------------------------------------
    def apply(self, name: str, config: dict[str, str], wait_s: float = 60.0) -> ApplyResult:
        """Validate, then create or update only if different, then wait until RUNNING."""
        errors = self.validate({**config, "name": name})
        if errors:
            lines = "; ".join(f"{field}: {' / '.join(errs)}" for field, errs in errors.items())
            msg = f"connector {name} config is invalid: {lines}"
            raise ConnectorValidationError(msg, errors)
        current = self.config(name)
        desired = {k: v for k, v in config.items() if k != "name"}
        if current is not None and {k: v for k, v in current.items() if k != "name"} == desired:
            action = "unchanged"
        else:
            self._call("PUT", f"/connectors/{name}/config", desired)
            action = "created" if current is None else "updated"
        state = self.wait_running(name, wait_s)
        log.info("connector applied name=%s action=%s state=%s", name, action, state)
        return ApplyResult(name, action, state)

    def wait_running(self, name: str, wait_s: float = 60.0) -> str:
        """Wait until the connector and all its tasks run; raise with the trace if one failed."""
        deadline = time.monotonic() + wait_s
        last = "UNKNOWN"
        while time.monotonic() < deadline:
            try:
                status = self.status(name)
            except ConnectError as exc:
                if "answered 404" not in str(exc):
                    raise
                time.sleep(0.2)
                continue
            connector = status["connector"]
            tasks = status.get("tasks", [])
            failed = [t for t in tasks if t["state"] == "FAILED"]
            if connector["state"] == "FAILED" or failed:
                trace = (failed[0] if failed else connector).get("trace", "(no trace)")
                msg = f"connector {name} failed: {trace.strip()[:4000]}"
                raise ConnectorFailedError(msg)
            last = connector["state"]
            if last == "RUNNING" and tasks and all(t["state"] == "RUNNING" for t in tasks):
                return "RUNNING"
            if last in {"PAUSED", "STOPPED"}:
                return str(last)
            time.sleep(0.2)
        msg = f"connector {name} is not RUNNING after {wait_s:.0f}s (state {last})"
        raise ConnectError(msg)

    def pause(self, name: str) -> None:
        self._call("PUT", f"/connectors/{name}/pause")

    def resume(self, name: str) -> None:
        self._call("PUT", f"/connectors/{name}/resume")

    def stop(self, name: str) -> None:
        """Stop the connector and its tasks (kept, with its offsets; ``resume`` starts it)."""
        self._call("PUT", f"/connectors/{name}/stop")

    def reset_offsets(self, name: str) -> None:
        """Forget the stopped connector's source offsets: it snapshots again when resumed."""
        self._call("DELETE", f"/connectors/{name}/offsets")

    def restart(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call(
            "POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed=false"
        )
        return result

    def delete(self, name: str) -> bool:
        """Delete the connector; False when there was none."""
        try:
            self._call("DELETE", f"/connectors/{name}")
        except ConnectError as exc:
            if "answered 404" in str(exc):
                return False
            raise
        return True

    def wait_state(self, name: str, state: str, wait_s: float = 30.0) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            status = self.status(name)
            tasks = status.get("tasks", [])
            if status["connector"]["state"] == state and all(t["state"] == state for t in tasks):
                return
            time.sleep(0.2)
        msg = f"connector {name} did not reach {state} in {wait_s:.0f}s"
        raise ConnectError(msg)


def snapshot_signal(tables: list[str], schema: str = "public") -> tuple[str, str, str]:
    """The signal-table row asking Debezium for an incremental snapshot of ``tables``."""
    collections = [t if "." in t else f"{schema}.{t}" for t in tables]
    data = orjson.dumps({"data-collections": collections, "type": "incremental"}).decode()
    return (f"snapshot-{uuid.uuid4().hex[:16]}", "execute-snapshot", data)
