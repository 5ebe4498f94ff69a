"""The local Redis's users: who may run which commands (Redis ACLs).

- ``redis_user`` (the writer: feature pipeline, learner, recovery): data commands on every key
  (``~*``: namespaces are chosen at run time, one per test or demo, and the pipeline owns all of
  them), scripts, transactions, ``INFO`` and ``CONFIG GET`` (the loss checks read the eviction
  policy and counters) and ``KEYS``; nothing of ``@admin`` or ``@dangerous`` besides those: no
  FLUSHALL/FLUSHDB, CONFIG SET/REWRITE, ACL, DEBUG, SHUTDOWN, MONITOR, CLIENT KILL, SCRIPT or
  FUNCTION FLUSH.
- ``redis_read_user`` (the API and the scorer's feature reads): read commands only, on keys
  opened read-only (``%R~*``), plus ``INFO``; no KEYS or SORT_RO (``@dangerous``), no scripts
  (a script may write).
- ``freshloop_admin``: everything; only ``freshloop stack`` uses it.
- ``default`` (a client that sends no user): off in the ACL file a new Redis starts with.

Passwords go to the ACL file as SHA-256 hashes (``#<hex>``), the form Redis itself saves.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import redis

from freshloop.core.settings import REDIS_ADMIN_USER, Settings

__all__ = ["acl_file_text", "admin_client", "apply_acl", "user_rules", "write_acl_file"]

log = logging.getLogger(__name__)

WRITER_RULES = (
    "~*",
    "&*",
    "-@all",
    "+@read",
    "+@write",
    "+@keyspace",
    "+@scripting",
    "+@transaction",
    "+@connection",
    "-@dangerous",
    "-@admin",
    "+info",
    "+config|get",
    "+keys",
    "-script|flush",
    "-script|kill",
    "-function",
)
READER_RULES = (
    "%R~*",
    "resetchannels",
    "-@all",
    "+@read",
    "+@connection",
    "-@dangerous",
    "-@admin",
    "+info",
)
# In a Redis Cluster (redis_layout=cluster) a client asks any node for the slot map and each
# node for its role; these read the cluster's layout only (no MEET, FORGET, slot changes).
CLUSTER_RULES = (
    "+cluster|slots",
    "+cluster|shards",
    "+cluster|nodes",
    "+cluster|info",
    "+cluster|myid",
    "+cluster|keyslot",
    "+readonly",
    "+readwrite",
)
ADMIN_RULES = ("~*", "&*", "+@all")
# The default user is off with no password: nobody can log in as it. It keeps every command
# and key on purpose: Redis 7.0 checks the default user's permissions when it loads the
# append-only file's MULTI/EXEC blocks (redis/redis#14541), so "-@all" would drop every batch
# the script wrote on each restart and move the positions back.
DEFAULT_RULES = ("off", "resetpass", "~*", "&*", "+@all")


def _hashed(secret: str) -> str:
    return "#" + hashlib.sha256(secret.encode()).hexdigest()


def user_rules(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each user's full ACL rules, password hash included (``reset`` first: exactly these)."""
    cluster = CLUSTER_RULES if settings.redis_layout == "cluster" else ()
    return {
        REDIS_ADMIN_USER: (
            "reset",
            "on",
            _hashed(settings.redis_admin_password.get_secret_value()),
            *ADMIN_RULES,
        ),
        settings.redis_user: (
            "reset",
            "on",
            _hashed(settings.redis_password.get_secret_value()),
            *WRITER_RULES,
            *cluster,
        ),
        settings.redis_read_user: (
            "reset",
            "on",
            _hashed(settings.redis_read_password.get_secret_value()),
            *READER_RULES,
            *cluster,
        ),
    }


def acl_file_text(settings: Settings) -> str:
    """The ACL file a new local Redis starts with: the three users, ``default`` off."""
    lines = [
        f"user {name} {' '.join(r for r in rules if r != 'reset')}"
        for name, rules in user_rules(settings).items()
    ]
    lines.append(f"user default {' '.join(DEFAULT_RULES)}")
    return "\n".join(lines) + "\n"


def admin_client(settings: Settings, host: str, port: int, timeout: float = 2.0) -> redis.Redis:
    """A client of the admin user; on a Redis set up before it had users (no such user yet), a
    client of ``default``, which such a Redis leaves open."""
    admin = redis.Redis(
        host=host,
        port=port,
        username=REDIS_ADMIN_USER,
        password=settings.redis_admin_password.get_secret_value(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    try:
        admin.ping()
        return admin
    except redis.AuthenticationError:
        admin.close()
    anonymous = redis.Redis(
        host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    anonymous.ping()  # NOAUTH here: the admin password is not this Redis's
    return anonymous


def apply_acl(
    client: redis.Redis, settings: Settings, echo: Callable[[str], None] | None = None
) -> bool:
    """Bring a running Redis to the users of ``user_rules`` (idempotent). ``default`` is
    turned off, and the users saved to the ACL file, only on a Redis started with one (by
    ``freshloop stack up``); a Redis started without one keeps ``default`` as it is, so the
    clients already connected through it go on working until it restarts. Returns whether
    ``default`` is off."""
    say = echo or (lambda _m: None)
    for name, rules in user_rules(settings).items():
        # one command, ``reset`` first: old passwords and rules go, atomically
        client.execute_command("ACL", "SETUSER", name, *rules)
    aclfile = client.config_get("aclfile").get("aclfile", "")
    if not aclfile:
        say(
            "redis: users set up; it was started without an ACL file, so the default user "
            "stays open until it restarts ('freshloop stack down redis && freshloop stack up')"
        )
        log.info("redis has no ACL file: default user left as it is")
        return False
    client.execute_command("ACL", "SETUSER", "default", *DEFAULT_RULES)
    client.execute_command("ACL", "SAVE")
    return True


def write_acl_file(path: Path, settings: Settings) -> Path:
    """The ACL file, readable by its owner only (it holds password hashes)."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(acl_file_text(settings))
    return path
