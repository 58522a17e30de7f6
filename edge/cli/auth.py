"""Who may change the kiosk's state from the command line, and how they are named.

Commands that change state (maintenance, eject, enrol, roster changes) call
``require_technician()`` first. Allowed: root, members of the ``kiosk-tech`` group, and the
kiosk's own service user (the owner of its state folder, which is also who runs the demo
and the tests; for a folder not made yet, the owner of its nearest existing parent).
Everyone else gets exit code 10 and a one-line reason.

``operator()`` names the person in the events those commands record: the login that ran
``sudo`` when there is one, else the account's name from the password database (never
``$USER``, which anyone can set).
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable
from pathlib import Path

from edge.errors import EdgeError

TECH_GROUP = "kiosk-tech"


class NotPermittedError(EdgeError, PermissionError):
    """The command changes the kiosk's state and this user may not do that."""


def operator() -> str:
    """The person at the keyboard, at most 64 characters."""
    uid = os.getuid()
    sudo_user = os.environ.get("SUDO_USER") if uid == 0 else None
    if sudo_user:
        return sudo_user[:64]
    try:
        return pwd.getpwuid(uid).pw_name[:64] or f"uid-{uid}"
    except KeyError:
        return f"uid-{uid}"


def tech_gid(group: str = TECH_GROUP) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def may_operate(
    uid: int, gids: Iterable[int], group_gid: int | None, owner_uid: int | None
) -> bool:
    """The rule, as a pure function: root, the technicians' group, or the state's owner."""
    if uid == 0 or (owner_uid is not None and uid == owner_uid):
        return True
    return group_gid is not None and group_gid in set(gids)


def _owner(path: Path) -> int | None:
    """The owner of ``path``, or of its nearest existing parent (a folder not made yet)."""
    for candidate in (path, *path.parents):
        try:
            return candidate.stat().st_uid
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def require_technician(state_dir: Path | None = None, what: str = "this command") -> str:
    """Refuse (``NotPermittedError``) unless this user may change the kiosk; returns
    ``operator()`` for the event the caller records."""
    owner = _owner(state_dir) if state_dir is not None else None
    gids = {*os.getgroups(), os.getgid()}
    if not may_operate(os.getuid(), gids, tech_gid(), owner):
        raise NotPermittedError(
            f"{what} changes the kiosk's state: it needs root or membership of the "
            f"{TECH_GROUP!r} group (ask an administrator: sudo usermod -aG {TECH_GROUP} "
            f"{operator()}, then log in again)"
        )
    return operator()
