"""Start, stop and inspect the local stack; only ever touch processes this stack started.

Each started service leaves ``<home>/run/<name>.json`` with its pid, port and the process's
start time (field 22 of ``/proc/<pid>/stat``). A pid is ours only while that process is alive,
not a zombie, and started at the recorded time, so a reused pid is never signalled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from freshloop.core.exceptions import StackError
from freshloop.core.settings import Settings
from freshloop.stack.folders import private_dir
from freshloop.stack.services import Service, build_services, port_open
from freshloop.stack.setup import ensure_jars, ensure_system_packages

__all__ = ["ServiceStatus", "Stack"]

log = logging.getLogger(__name__)

_READY_TIMEOUT_S = {"postgres": 60.0, "redis": 20.0, "kafka": 90.0, "connect": 180.0}


@dataclass(frozen=True)
class ServiceStatus:
    """What ``freshloop stack status`` shows for one service."""

    name: str
    port: int
    pid: int | None
    state: str  # running | starting | down | foreign
    healthy: bool


def _started_at(pid: int) -> str | None:
    """The kernel's start time of a live (non-zombie) process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in {"Z", "X"}:
        return None
    return fields[19]


def _alive(pid: int, started: str | None) -> bool:
    return started is not None and _started_at(pid) == started


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class Stack:
    """The local services in start order, with their pid files and logs in one folder."""

    def __init__(self, settings: Settings, echo: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.services = build_services(settings)
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "logs"
        self._echo = echo or (lambda _m: None)

    # ---- pid files -------------------------------------------------------------------
    def _pidfile(self, svc: Service) -> Path:
        return self.run_dir / f"{svc.name}.json"

    def pid_of(self, svc: Service) -> int | None:
        """The pid of this stack's live process for the service, or None."""
        try:
            record = json.loads(self._pidfile(svc).read_text())
        except (OSError, ValueError):
            return None
        pid = int(record.get("pid", 0))
        if pid > 0 and _alive(pid, record.get("proc_start")):
            return pid
        return None

    def _live_pids(self, svc: Service) -> set[int]:
        pid = self.pid_of(svc)
        return set() if pid is None else {pid}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def select(self, names: Iterable[str] | None) -> list[Service]:
        wanted = list(names or [])
        known = {s.name for s in self.services} | {s.group for s in self.services}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            msg = f"unknown service {', '.join(unknown)}: choose from {', '.join(sorted(known))}"
            raise StackError(msg)
        return [s for s in self.services if not wanted or s.name in wanted or s.group in wanted]

    # ---- status ----------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        out = []
        for svc in self.services:
            pid = self.pid_of(svc)
            if pid is not None:
                healthy = svc.ready()
                state = "running" if healthy else "starting"
            elif port_open(svc.host, svc.port):
                state, healthy = "foreign", svc.ready()  # someone else's server: usable?
            else:
                state, healthy = "down", False
            out.append(ServiceStatus(svc.name, svc.port, pid, state, healthy))
        return out

    def all_healthy(self) -> bool:
        return all(s.healthy for s in self.status())

    # ---- up --------------------------------------------------------------------------
    def setup(self, for_tests: bool = False) -> None:
        """Install system packages and fetch the jars (no-ops the second time); ``for_tests``:
        also what only the tests need (a headless browser for the dashboard's test)."""
        ensure_system_packages(for_tests=for_tests)
        ensure_jars(self.home)

    def up(self, names: Iterable[str] | None = None) -> list[str]:
        """Start whatever is not running yet, each only after the previous one answers.

        Returns the names of the services this call started (empty when all were up). A
        running service is brought to the settings where that is idempotent (Redis's users).
        """
        self.setup()
        private_dir(self.run_dir)
        private_dir(self.log_dir)
        started: list[str] = []
        for svc in self.select(names):
            pid = self.pid_of(svc)
            if pid is not None:
                self._wait_ready(svc, pid)
                svc.reconcile(self._echo)  # e.g. Redis's users on a Redis started before them
                continue
            for port in (svc.port, *svc.extra_ports):
                if port_open(svc.host, port):
                    msg = (
                        f"port {port} ({svc.name}) is already in use by a process freshloop did "
                        f"not start; stop it, or move {svc.name} to a free port in the settings "
                        "(FRESHLOOP_POSTGRES_DSN, _REDIS_URL, _KAFKA_BOOTSTRAP, "
                        "_KAFKA_CONTROLLER_PORT, _CONNECT_URL)"
                    )
                    raise StackError(msg)
            self._start(svc)
            started.append(svc.name)
        return started

    def _start(self, svc: Service) -> None:
        t0 = time.monotonic()
        self._echo(f"starting {svc.name} on {svc.host}:{svc.port}")
        svc.prepare()
        with self.log_path(svc.name).open("ab") as log_file:
            proc = subprocess.Popen(
                svc.command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=svc.root,
                env=svc.env(),
                user=svc.run_as,
                umask=0o077,  # what a server writes (data, its rewritten files) is its own
            )
        proc_start = _started_at(proc.pid)
        record = {"pid": proc.pid, "port": svc.port, "proc_start": proc_start, "at": time.time()}
        self._pidfile(svc).write_text(json.dumps(record))
        self._wait_ready(svc, proc.pid)
        svc.after_start()
        self._echo(f"{svc.name} ready in {time.monotonic() - t0:.1f}s (pid {proc.pid})")

    def _wait_ready(self, svc: Service, pid: int) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S.get(svc.group, 60.0)
        while time.monotonic() < deadline:
            if svc.ready():
                return
            if pid not in self._live_pids(svc):
                _reap(pid)
                tail = self.tail(svc.name, 25)
                msg = f"{svc.name} exited while starting; last log lines:\n{tail}"
                raise StackError(msg)
            time.sleep(0.2)
        msg = f"{svc.name} did not answer on port {svc.port} in time; see {self.log_path(svc.name)}"
        raise StackError(msg)

    # ---- down ------------------------------------------------------------------------
    def down(self, names: Iterable[str] | None = None, timeout: float = 45.0) -> list[str]:
        """Stop this stack's processes (reverse order); never signal anything else."""
        stopped = []
        for svc in reversed(self.select(names)):
            pid = self.pid_of(svc)
            if pid is None:
                self._pidfile(svc).unlink(missing_ok=True)
                continue
            self._echo(f"stopping {svc.name} (pid {pid})")
            self._signal(pid, svc.stop_signal)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.pid_of(svc) == pid:
                _reap(pid)
                time.sleep(0.1)
            if self.pid_of(svc) == pid:
                self._echo(f"{svc.name} did not stop in {timeout:.0f}s: killing pid {pid}")
                self._signal(pid, signal.SIGKILL)
            _reap(pid)
            self._pidfile(svc).unlink(missing_ok=True)
            stopped.append(svc.name)
        return stopped

    def kill(self, name: str) -> int | None:
        """kill -9 one service of this stack (fault tests); returns the pid it killed."""
        (svc,) = [s for s in self.select([name]) if s.name == name]  # one cluster node
        pid = self.pid_of(svc)
        if pid is not None:
            self._signal(pid, signal.SIGKILL)
            while self.pid_of(svc) == pid:
                _reap(pid)
                time.sleep(0.05)
        return pid

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # ---- logs ------------------------------------------------------------------------
    def tail(self, name: str, lines: int = 50) -> str:
        path = self.log_path(name)
        if not path.exists():
            return f"(no log yet at {path})"
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode(errors="replace")
        return "\n".join(data.splitlines()[-lines:])
