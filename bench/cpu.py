"""CPU time of processes, process trees and Redis, read from ``/proc`` and ``INFO cpu``.

The bench shares two cores with the whole stack (and, on a shared machine, with other work), so
a rate alone does not say what bounds it: these helpers give each component's CPU seconds over a
measurement window, and the machine's total busy time in the same window, so the report can say
which part used which share of the cores.

A process tree's time is the sum, over its live processes, of their own and their reaped
children's times (``utime + stime + cutime + cstime``): a Postgres backend that exits inside the
window moves from its own time into its parent's ``cutime``, counted once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: the fields after it follow the last ')'
    return text[text.rindex(")") + 2 :].split()


def process_cpu_s(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) of ``pid`` so far; with ``children``, also of its reaped
    children. 0 when the process is gone."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None:
            kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def tree_pids(root: int, kids: Mapping[int, list[int]] | None = None) -> list[int]:
    """``root`` and every live descendant."""
    kids = _children_map() if kids is None else kids
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def tree_cpu_s(root: int, kids: Mapping[int, list[int]] | None = None) -> float:
    """CPU seconds of ``root``'s process tree (live processes and those they reaped)."""
    return sum(process_cpu_s(pid, children=True) for pid in tree_pids(root, kids))


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (``/proc/stat``)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in parts[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / TICK, sum(ticks) / TICK


def redis_cpu_s(client: Any) -> float:
    """Redis's CPU seconds so far (``INFO cpu``: main thread and its helpers, user + system)."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@dataclass
class CpuWindow:
    """CPU seconds of named components over one window: ``start()``, the work, ``stop()``.

    Components are process trees (``trees``: name -> root pid, e.g. the stack's services),
    single processes counted with their reaped children (``procs``: name -> pids, e.g. the
    bench's own pipeline subprocesses), and the bench process's own reaped children
    (``own_children``: e.g. a ``multiprocessing`` pool of writers that exits inside the window).
    """

    trees: dict[str, int] = field(default_factory=dict)
    procs: dict[str, list[int]] = field(default_factory=dict)
    own_children: str | None = None
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0
    _busy0: tuple[float, float] = (0.0, 0.0)

    def _read(self) -> dict[str, float]:
        kids = _children_map()
        out = {name: tree_cpu_s(pid, kids) for name, pid in self.trees.items()}
        for name, pids in self.procs.items():
            out[name] = sum(process_cpu_s(p, children=True) for p in pids)
        if self.own_children is not None:
            import resource

            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            out[self.own_children] = usage.ru_utime + usage.ru_stime
        return out

    def start(self) -> CpuWindow:
        self._start = self._read()
        self._t0 = time.monotonic()
        self._busy0 = machine_busy_s()
        return self

    def add_procs(self, name: str, pids: Iterable[int]) -> None:
        """Count processes started after ``start()`` (their time so far is all in the window)."""
        self.procs.setdefault(name, []).extend(pids)
        self._start.setdefault(name, 0.0)

    def stop(self, extra: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Each component's CPU seconds and share of the machine's cores over the window, with
        ``other``: the machine's busy time not in any component (other work on the machine).
        ``extra``: seconds measured otherwise (name -> seconds), e.g. processes that ended."""
        end = self._read()
        wall = time.monotonic() - self._t0
        busy1 = machine_busy_s()
        cores = os.cpu_count() or 1
        seconds = {name: max(0.0, end[name] - self._start.get(name, 0.0)) for name in end}
        seconds.update(extra or {})
        busy = busy1[0] - self._busy0[0]
        seconds["other"] = max(0.0, busy - sum(seconds.values()))
        return {
            "wall_s": round(wall, 3),
            "cores": cores,
            "machine_busy_share": round(busy / (wall * cores), 4) if wall > 0 else None,
            "cpu_s": {k: round(v, 3) for k, v in seconds.items()},
            # share of all the machine's cores over the window (1.0 = every core busy)
            "share_of_cores": {
                k: round(v / (wall * cores), 4) if wall > 0 else None for k, v in seconds.items()
            },
        }
