"""Folders the local stack writes: private to their owner, and never reached through a link.

The state folder holds data, logs and the services' password files: it is created 0700. When
Postgres runs as another user that cannot reach it (as root), Postgres's folder goes under a
shared, world-writable folder instead; there a name can be taken in advance by anyone, so that
folder is created without following a link and used only when it is a real folder of ours that
nobody else can write.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from freshloop.core.exceptions import StackError

__all__ = ["private_dir", "secure_shared_dir"]


def private_dir(path: Path) -> Path:
    """``path`` and its missing parents; ``path`` itself, when created here, is 0700."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not path.is_dir():
            msg = f"{path} exists and is not a folder: move it away or set FRESHLOOP_HOME"
            raise StackError(msg) from None
        return path
    path.chmod(0o700)  # whatever the umask
    return path


def secure_shared_dir(path: Path, mode: int = 0o711) -> Path:
    """``path`` (one level under a shared folder such as /var/tmp), made or reused only if it is
    a folder (not a link) owned by this user and writable by nobody else.

    ``mode`` 0711 lets another local user (the ``postgres`` server) pass through to a folder of
    its own inside, without listing it.
    """
    try:
        os.mkdir(path, mode)  # never follows a link at its last component: EEXIST instead
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        msg = (
            f"{path} exists and is not a plain folder (a symbolic link, or a file): someone "
            f"may have planted it; remove it ({exc.strerror}) or set FRESHLOOP_HOME to a "
            "folder the postgres user can reach"
        )
        raise StackError(msg) from exc
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            msg = (
                f"{path} belongs to user id {info.st_uid}, not to this user ({os.geteuid()}): "
                "it was made by someone else; remove it, or set FRESHLOOP_HOME to a folder the "
                "postgres user can reach"
            )
            raise StackError(msg)
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            msg = (
                f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}): "
                f"run 'chmod go-w {path}' or remove it"
            )
            raise StackError(msg)
    finally:
        os.close(fd)
    return path
