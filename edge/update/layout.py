"""Versions on disk under ``update.root`` and the links between them (``Layout``): which
versions are complete, the atomic switch of a link, the update lock, and putting right what
a power cut left (``Layout.recover``). The layout itself is described in
``edge.update.updater``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from cloud_sync.files import fsync_dir
from edge.update.bundle import VERSION, Manifest, parse_manifest
from edge.update.durable import RECORD, release_problem
from edge.update.errors import BundleError, UpdateStateError

log = structlog.get_logger("edge.update")

MARKER = "bundle-manifest.json"
#: Written first into a version folder an install starts (and removed once its marker
#: is written): only a folder holding one of the two is ever discarded as unfinished.
STARTED = ".install-started"
FAILED = "FAILED"
CURRENT, PREVIOUS = "current", "previous"


@dataclass(frozen=True)
class Installed:
    version: str
    created_at: datetime
    failed: str | None


class Layout:
    """The installed versions under ``root`` and the ``current``/``previous`` links."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def link(self, name: str) -> str | None:
        try:
            target = (self.root / name).readlink()
        except OSError:
            return None
        version = Path(target).name
        return version if VERSION.match(version) else None

    def manifest(self, version: str) -> Manifest | None:
        try:
            return parse_manifest((self.root / version / MARKER).read_bytes())
        except (OSError, BundleError):
            return None

    def problem(self, version: str, deep: bool = False) -> str | None:
        """Why ``version`` is not a complete install (its marker, or a file its record lists
        missing or of another size; another digest too with ``deep``), or None. A version
        installed before records were kept is judged by its marker alone."""
        folder = self.root / version
        if folder.is_symlink() or not folder.is_dir():
            return "not installed"
        if self.manifest(version) is None:
            return f"no readable {MARKER}: an install cut short"
        if not (folder / RECORD).exists():
            return None
        return release_problem(folder, deep)

    def damaged(self, version: str) -> str | None:
        """``problem`` of a version installed from a bundle (its marker is there, whole or
        not); a folder without any marker was put there by hand, and is left alone."""
        folder = self.root / version
        return self.problem(version) if (folder / MARKER).is_file() else None

    def installed(self) -> list[Installed]:
        """Complete installs, oldest first."""
        found = []
        for path in self.root.iterdir() if self.root.is_dir() else ():
            manifest = self.manifest(path.name) if VERSION.match(path.name) else None
            if manifest is not None and self.problem(path.name) is None:
                failed = path / FAILED
                reason = (
                    failed.read_text(encoding="utf-8", errors="replace").strip() or "(no detail)"
                    if failed.is_file()
                    else None
                )
                found.append(Installed(path.name, manifest.created_at, reason))
        return sorted(found, key=lambda item: (item.created_at, item.version))

    def point(self, name: str, version: str) -> None:
        """Atomically make ``<root>/<name>`` point at ``version``."""
        replace_link(self.root / name, version)

    def unpoint(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()
        fsync_dir(self.root)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the update lock (one update at a time); leftovers of a cut-off run go."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = (self.root / ".update.lock").open("a")
        except PermissionError:
            raise UpdateStateError(
                f"cannot write {self.root}: run the update as root (sudo kiosk update ...)"
            ) from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UpdateStateError(f"another kiosk update is running on {self.root}") from None
            for leftover in self.root.glob(".incoming-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            self.recover()
            yield

    def recover(self) -> None:
        """Put right what a power cut left (with the lock held): no link points at an
        incomplete version (``current`` goes back to ``previous`` when that one is whole),
        and incomplete versions and half-made links are removed."""
        for leftover in self.root.glob(".*.tmp"):  # a link made but not yet renamed
            if leftover.is_symlink() or leftover.is_file():
                leftover.unlink(missing_ok=True)
        current, previous = self.link(CURRENT), self.link(PREVIOUS)
        if previous is not None and (problem := self.damaged(previous)) is not None:
            log.error("update.recovered", link=PREVIOUS, version=previous, problem=problem)
            self.unpoint(PREVIOUS)
            previous = None
        if current is not None and (problem := self.damaged(current)) is not None:
            log.error(
                "update.recovered", link=CURRENT, version=current, problem=problem, now=previous
            )
            if previous is not None:
                self.point(CURRENT, previous)
                self.unpoint(PREVIOUS)
            else:
                self.unpoint(CURRENT)
        for path in self.unfinished():
            shutil.rmtree(path, ignore_errors=True)
            log.warning("update.discarded", version=path.name, reason="an install cut short")
        fsync_dir(self.root)

    def unfinished(self) -> list[Path]:
        """Version folders an install did not finish (no marker, or a file missing or cut
        short), other than the links'. Only folders an install made (``STARTED`` or
        ``MARKER`` inside): a folder with a version-like name that an install never touched
        (``update.root`` set to a shared folder such as /opt holds ``1password``) is left
        alone, as ``damaged`` promises."""
        linked = {self.link(CURRENT), self.link(PREVIOUS)}
        return [
            path
            for path in (self.root.iterdir() if self.root.is_dir() else ())
            if VERSION.match(path.name)
            and path.is_dir()
            and not path.is_symlink()
            and path.name not in linked
            and ((path / STARTED).is_file() or (path / MARKER).is_file())
            and self.problem(path.name) is not None
        ]


def replace_link(link: Path, target: str) -> None:
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(target)
    temporary.replace(link)
    fsync_dir(link.parent)


def link_units(layout: Layout, version: str, unit_dir: Path) -> list[str]:
    """Make ``<unit_dir>/<unit>`` a link into ``current`` for each unit of ``version``
    (a unit file an administrator put there is left alone); the units newly linked."""
    made = []
    unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in sorted((layout.root / version / "systemd").glob("kiosk-*.service")):
        link = unit_dir / unit.name
        if link.exists() and not link.is_symlink():
            log.warning("update.unit_kept", unit=str(link), reason="not a link: left alone")
            continue
        wanted = str(layout.root / CURRENT / "systemd" / unit.name)
        if not link.is_symlink() or str(link.readlink()) != wanted:
            replace_link(link, wanted)
            made.append(unit.name)
    return made
