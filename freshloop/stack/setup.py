"""Fetch and install what the local stack needs, idempotently.

System packages come from the OS package manager (installed when running as root, otherwise a
clear error with the exact command); Kafka, Kafka Connect and the Debezium connector come as jars
from Maven Central, pinned in the pom files beside this module, copied once into the state folder.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from freshloop.core.exceptions import SetupError

__all__ = [
    "JarSet",
    "ensure_jars",
    "ensure_system_packages",
    "find_postgres_bindir",
    "jar_sets",
    "missing_packages",
]

log = logging.getLogger(__name__)

_MAVEN_DIR = Path(__file__).parent / "maven"

# binary -> Debian package that provides it
_SYSTEM_PACKAGES = {
    "redis-server": "redis-server",
    "java": "openjdk-17-jre-headless",
    "mvn": "maven",
}
# Needed by the tests only (the dashboard's headless-browser test), never by the service or the
# demo: installed only when the tests' set-up asks for them (``make test``, CI), as root with the
# rest; otherwise the test skips, naming the command.
_TEST_PACKAGES = {
    "chromium": "chromium",
}


def find_postgres_bindir() -> Path | None:
    """The folder holding ``postgres`` and ``initdb`` (Debian keeps them out of PATH)."""
    override = os.environ.get("FRESHLOOP_PG_BINDIR")
    if override:
        return Path(override)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def missing_packages(for_tests: bool = False) -> tuple[list[str], list[str]]:
    """The system packages the stack needs that are not installed, and (``for_tests``) those
    only the tests need; without ``for_tests`` the second list is empty."""
    missing = [pkg for binary, pkg in _SYSTEM_PACKAGES.items() if shutil.which(binary) is None]
    if find_postgres_bindir() is None:
        missing.append("postgresql")
    test_only = [pkg for binary, pkg in _TEST_PACKAGES.items() if shutil.which(binary) is None]
    return missing, test_only if for_tests else []


def ensure_system_packages(echo: bool = True, for_tests: bool = False) -> None:
    """Install missing system packages as root; otherwise say exactly what to run.
    ``for_tests``: also what only the tests need (a headless browser), optional without root."""
    missing, test_only = missing_packages(for_tests)
    if test_only and os.geteuid() == 0 and shutil.which("apt-get") is not None:
        missing += test_only
    elif test_only and echo:
        print(
            f"[setup] optional, for the dashboard browser test: sudo apt-get install -y "
            f"{' '.join(test_only)}",
            flush=True,
        )
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        msg = (
            f"missing system packages: {', '.join(missing)}. Install them with: "
            f"sudo apt-get update && sudo {' '.join(command)}"
        )
        raise SetupError(msg)
    if shutil.which("apt-get") is None:
        msg = f"missing system packages {', '.join(missing)} and no apt-get to install them"
        raise SetupError(msg)
    if echo:
        print(f"[setup] installing system packages: {' '.join(missing)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*command, "-qq"], check=True, env=env)
    still, _tests = missing_packages()
    if still:
        msg = f"apt-get ran but these are still missing: {', '.join(still)}"
        raise SetupError(msg)


@dataclass(frozen=True)
class JarSet:
    """One pom file and the folder its runtime jars are copied into."""

    name: str
    pom: Path
    target: Path
    maven_args: tuple[str, ...] = ()

    @property
    def stamp(self) -> Path:
        return self.target / ".pom.sha256"

    def digest(self) -> str:
        data = self.pom.read_bytes() + "\0".join(self.maven_args).encode()
        return hashlib.sha256(data).hexdigest()

    def is_current(self) -> bool:
        return self.stamp.exists() and self.stamp.read_text().strip() == self.digest()


def jar_sets(home: Path) -> tuple[JarSet, JarSet]:
    """Broker and Connect classpath, and the Debezium plugin folder, kept apart."""
    lib = home.resolve() / "lib"
    return (
        JarSet("kafka", _MAVEN_DIR / "kafka" / "pom.xml", lib / "kafka"),
        JarSet(
            "debezium",
            _MAVEN_DIR / "debezium" / "pom.xml",
            lib / "plugins" / "debezium-connector-postgres",
            # The worker provides Kafka's own jars and the logging API.
            (
                "-DexcludeGroupIds=org.apache.kafka,org.slf4j,com.fasterxml.jackson.core",
                "-DexcludeArtifactIds=lz4-java,snappy-java,zstd-jni",
            ),
        ),
    )


def ensure_jars(home: Path, echo: bool = True) -> tuple[JarSet, JarSet]:
    """Copy the pinned jars into ``home/lib`` unless they are there already for this pom."""
    sets = jar_sets(home)
    for jars in sets:
        if jars.is_current():
            continue
        if shutil.which("mvn") is None:
            msg = "Maven is needed to fetch the Kafka and Debezium jars: apt-get install -y maven"
            raise SetupError(msg)
        if echo:
            print(f"[setup] fetching {jars.name} jars from Maven Central (once)...", flush=True)
        if jars.target.exists():
            shutil.rmtree(jars.target)
        jars.target.mkdir(parents=True)
        command = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(jars.pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={jars.target}",
            *jars.maven_args,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = result.stdout[-3000:] + result.stderr[-2000:]
            msg = f"fetching the {jars.name} jars failed:\n{output}"
            raise SetupError(msg)
        jars.stamp.write_text(jars.digest())
    return sets
