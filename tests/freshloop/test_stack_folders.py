"""The state folder is private, and the fallback folder under a shared temporary folder is
never reached through a link someone planted, nor taken when someone else made it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from freshloop.core.exceptions import StackError
from freshloop.core.settings import Settings
from freshloop.stack.folders import private_dir, secure_shared_dir
from freshloop.stack.services import Postgres, build_services


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_state_folder_and_service_folders_are_created_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        home = tmp_path / "state"
        services = build_services(Settings(home=home))
        assert _mode(home) == 0o700
        for svc in services:
            if svc.name in {"redis", "kafka", "connect"}:  # no binaries needed to prepare
                private_dir(svc.root)
                assert _mode(svc.root) == 0o700, svc.name
        assert _mode(private_dir(home / "logs")) == 0o700
    finally:
        os.umask(old)


def test_an_existing_folder_is_left_as_it_is(tmp_path: Path) -> None:
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    private_dir(existing)
    assert _mode(existing) == 0o755
    (tmp_path / "file").write_text("x")
    with pytest.raises(StackError, match="not a folder"):
        private_dir(tmp_path / "file")


def test_the_fallback_folder_is_made_private_to_its_owner(tmp_path: Path) -> None:
    made = secure_shared_dir(tmp_path / "freshloop-abc")
    info = made.lstat()
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
    assert _mode(made) & 0o022 == 0
    assert secure_shared_dir(made) == made  # reused the second time


def test_a_planted_link_is_refused_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.mkdir()
    link = tmp_path / "freshloop-abc"
    link.symlink_to(target)
    with pytest.raises(StackError, match="symbolic link"):
        secure_shared_dir(link)
    assert list(target.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder owned by another user needs root")
def test_a_folder_made_by_someone_else_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "freshloop-abc"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)  # nobody
    with pytest.raises(StackError, match="belongs to user id 65534"):
        secure_shared_dir(theirs)


def test_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "freshloop-abc"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(StackError, match="writable by other users"):
        secure_shared_dir(loose)


def test_postgres_refuses_a_planted_fallback_before_writing_anything(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.mkdir()
    link = tmp_path / "freshloop-abc"
    link.symlink_to(target)
    settings = Settings(home=tmp_path / "state")
    pg = Postgres("postgres", settings.postgres_port, settings, link / "postgres")
    with pytest.raises(StackError, match="symbolic link"):
        pg.prepare()
    assert list(target.iterdir()) == []
