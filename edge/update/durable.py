"""A release on the disk, made to survive a power cut: every file and folder of it fsynced
before it may be switched to, and a record of its files (size and sha256) that tells a
complete release from one a cut left empty or torn.

``sync_tree`` fsyncs a folder's files and folders (deepest first; links are entries of
their folder). ``release_record`` is the text of ``release-files.json``; ``release_problem``
checks a release against it (sizes only, or every digest with ``deep``) and returns what is
wrong in words, or None. Both pure of policy: the updater decides what a problem means.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cloud_sync.files import fsync_dir
from edge.update.bundle import sha256_file

RECORD = "release-files.json"


def sync_tree(folder: Path) -> None:
    """fsync every regular file under ``folder``, then every folder, deepest first."""
    folders = [folder]
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            folders.append(path)
        elif path.is_file():
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    for each in sorted(folders, key=lambda item: len(item.parts), reverse=True):
        fsync_dir(each)


def release_files(folder: Path, skip: set[str]) -> list[str]:
    """Regular files under ``folder`` (relative POSIX paths, sorted), but those in ``skip``."""
    return sorted(
        relative
        for path in folder.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and (relative := path.relative_to(folder).as_posix()) not in skip
    )


def release_record(folder: Path, skip: set[str]) -> bytes:
    """The content of ``release-files.json``: ``{path: [size, sha256]}`` of every file."""
    entries = {
        path: [(folder / path).stat().st_size, sha256_file(folder / path)]
        for path in release_files(folder, skip | {RECORD})
    }
    return (json.dumps(entries, indent=0, sort_keys=True) + "\n").encode()


def release_problem(folder: Path, deep: bool = False) -> str | None:
    """What makes the release in ``folder`` incomplete, or None when every recorded file is
    there with its size (and, with ``deep``, its sha256)."""
    try:
        entries = json.loads((folder / RECORD).read_bytes())
        if not isinstance(entries, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        return f"no {RECORD}"
    except (OSError, ValueError) as exc:
        return f"{RECORD} is damaged ({exc.__class__.__name__})"
    for path, entry in sorted(entries.items()):
        target = folder / path
        try:
            size, digest = entry
            if target.is_symlink() or not target.is_file():
                return f"{path} is missing"
            if target.stat().st_size != size:
                return f"{path} has {target.stat().st_size} bytes, not {size}"
            if deep and sha256_file(target) != digest:
                return f"{path} has another sha256 than when it was installed"
        except (OSError, TypeError, ValueError):
            return f"{path} cannot be checked"
    return None
