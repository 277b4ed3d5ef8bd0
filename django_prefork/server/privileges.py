"""Who the workers run as: the ``user``, ``group`` and ``initgroups`` settings.

As in gunicorn, the master keeps the privileges it was started with (it binds, writes the
pidfile, reopens the logs) and the processes that run the project drop them after the
sockets are bound: each worker, and before that the zygote, which imports the project's
settings and URLconf (so no project code runs as root unless it is loaded in the master:
``--preload``, or a LOGGING that routes django_prefork's loggers). What the workers keep
using of the master's is handed to them: the heartbeat file (``fchmod`` needs its owner) and
the log files they reopen on USR1 (see docs/architecture.md, "Processes and privileges").

The order of the calls is the one that works: the group first (only root may change it),
then the supplementary groups, and the user last, since after ``setuid`` nothing can be
changed back. Unlike gunicorn, root's supplementary groups are cleared when
``initgroups`` is off rather than kept.
"""

from __future__ import annotations

import os
import stat
from typing import Any

__all__ = [
    "PrivilegeError",
    "drop_privileges",
    "give_file_to_workers",
    "privilege_problems",
    "worker_ids",
]


class PrivilegeError(Exception):
    """The process cannot become the configured user/group; str() is one line."""


def worker_ids(cfg: Any) -> tuple[int, int] | None:
    """(uid, gid) the workers run as, or None when neither ``user`` nor ``group`` is set.

    A setting left unset means this process's own id, as gunicorn's defaults
    (``os.geteuid()``, ``os.getegid()``).
    """
    user = getattr(cfg, "user", None)
    group = getattr(cfg, "group", None)
    if user is None and group is None:
        return None
    return (os.geteuid() if user is None else int(user),
            os.getegid() if group is None else int(group))


def _changes_identity(ids: tuple[int, int]) -> bool:
    uid, gid = ids
    return (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (uid, uid, gid, gid)


def _user_name(uid: int) -> str | None:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a numeric uid with no passwd entry: no groups to look up
        return None


def drop_privileges(cfg: Any) -> None:
    """Become the configured user and group (a no-op when already them, or none is set).

    Raises PrivilegeError if this process may not (it is not root).
    """
    ids = worker_ids(cfg)
    if ids is None or not _changes_identity(ids):
        return
    uid, gid = ids
    try:
        os.setgid(gid)
        name = _user_name(uid) if getattr(cfg, "initgroups", False) else None
        if name is not None:
            # gunicorn's initgroups: every group the user is a member of, plus gid.
            os.initgroups(name, gid)
        else:
            os.setgroups([])
        os.setuid(uid)
    except OSError as exc:
        raise PrivilegeError(
            f"cannot switch to uid {uid} and gid {gid}: {exc.strerror or exc} (the master "
            "must run as root to change the workers' user or group)") from None


def give_file_to_workers(cfg: Any, path: str) -> None:
    """chown a file the master opened (a log file) to the workers' user, so that they can
    reopen it on USR1, as gunicorn does with its log files. Only regular files: never
    /dev/null or a terminal. Errors are ignored (the file may be on a filesystem that does
    not allow it; the worker's reopen then says so)."""
    ids = worker_ids(cfg)
    if ids is None or os.geteuid() != 0:
        return
    try:
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode) and (info.st_uid, info.st_gid) != ids:
            os.chown(path, *ids)
    except OSError:
        pass


def privilege_problems(cfg: Any) -> list[str]:
    """Start-up checks for settings whose validity depends on this process: one line each.

    A different user or group needs root. The worker_tmp_dir must be writable by the master,
    which creates the heartbeat files there (its existence is checked by the setting's rule).
    """
    problems: list[str] = []
    ids = worker_ids(cfg)
    if ids is not None and _changes_identity(ids) and os.geteuid() != 0:
        uid, gid = ids
        problems.append(
            f"--user (USER) / --group (GROUP) ask for uid {uid} and gid {gid}, but the server "
            f"runs as uid {os.geteuid()}, which may not switch. Fix: start it as root, or "
            "leave --user and --group unset to run as this user.")
    tmp_dir = getattr(cfg, "worker_tmp_dir", None)
    if tmp_dir and not os.access(tmp_dir, os.W_OK | os.X_OK):
        problems.append(
            f"--worker-tmp-dir (WORKER_TMP_DIR) {tmp_dir!r} is not writable by this user, "
            "who creates the heartbeat files there. Fix: choose a writable directory such "
            "as /dev/shm, or leave it unset.")
    return problems
