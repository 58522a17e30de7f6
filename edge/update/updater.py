"""``kiosk update``, the I/O part: an update and the switch between versions (the versions
on disk and their links are ``edge.update.layout``'s ``Layout``).

Layout under the root (``update.root``, ``/opt/kiosk`` on a kiosk)::

    <root>/<version>/            a virtual environment with that version installed, its
                                 units in systemd/, release-files.json (the size and sha256
                                 of every file) and bundle-manifest.json (written last:
                                 a folder without it is an unfinished install)
    <root>/current -> <version>  what the services run (/opt/kiosk/current/bin/kiosk)
    <root>/previous -> <version> what ``kiosk update rollback`` goes back to
    <unit_dir>/<unit> -> <root>/current/systemd/<unit>

A link is switched by making the new link under a temporary name and renaming it over the
old one, then fsyncing the folder, so it is always either the old or the new version. A
power cut must not leave ``current`` on a version whose files the kernel had not written
yet: every file and folder of a new version is fsynced, then its record and its marker are
written atomically (``cloud_sync.files``), before any link points at it. Each run starts by
putting right what a cut left (``Layout.recover``): a link to an incomplete version goes
back to the other one, and an incomplete version is removed, to be installed again. ``Updater`` carries out an
update with replaceable parts (``Hooks``; the real ones are in ``edge.update.hooks``): the
installer, the restart, the health probe and the check that no rental is under way, so that
the whole sequence is tested without root.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from cloud_sync.files import fsync_dir, remove_durably, write_atomic
from edge.update.bundle import (
    MANIFEST,
    SIGNATURE,
    VERSION,
    Manifest,
    to_prune,
    trusted_manifest,
    verify_bundle,
    wait_healthy,
)
from edge.update.durable import RECORD, release_record, sync_tree
from edge.update.errors import (
    BundleError,
    RentalInProgressError,
    UnhealthyError,
    UpdateError,
    UpdateStateError,
)
from edge.update.layout import CURRENT as CURRENT
from edge.update.layout import FAILED as FAILED
from edge.update.layout import MARKER as MARKER
from edge.update.layout import PREVIOUS as PREVIOUS
from edge.update.layout import STARTED, link_units
from edge.update.layout import Layout as Layout
from edge.update.unpack import staged

log = structlog.get_logger("edge.update")

Installer = Callable[[Path, Manifest, Path, str], None]
SWITCHING = ".switching.json"


# -- the update -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hooks:
    install: Installer
    restart: Callable[[], None]
    health: Callable[[str], tuple[bool, str]]
    rental: Callable[[], str | None]
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Policy:
    public_key: str | None = None
    require_signature: bool = True
    health_timeout_s: float = 120.0
    health_interval_s: float = 2.0
    health_passes: int = 3
    keep_versions: int = 3
    unit_dir: Path | None = None
    arch: str = field(default_factory=platform.machine)


@dataclass(frozen=True)
class Switch:
    """The journal of a switch under way (``SWITCHING`` in the root, written atomically
    before the links move, removed once the new version is settled)."""

    version: str
    old_current: str | None
    old_previous: str | None

    def dump(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    @classmethod
    def load(cls, data: bytes) -> Switch:
        fields = json.loads(data)
        switch = cls(fields["version"], fields["old_current"], fields["old_previous"])
        names = (switch.version, switch.old_current or "0", switch.old_previous or "0")
        if not all(isinstance(name, str) and VERSION.match(name) for name in names):
            raise ValueError("not a version")
        return switch


@dataclass(frozen=True)
class Outcome:
    action: str  # "switched", "already-current"
    version: str
    previous: str | None
    detail: str = ""


class Updater:
    def __init__(self, root: Path, hooks: Hooks, policy: Policy) -> None:
        self.layout = Layout(root)
        self.hooks = hooks
        self.policy = policy

    def verify(self, bundle: Path) -> Manifest:
        """Check a bundle without installing it (a folder in place, an archive unpacked)."""
        if bundle.is_dir():
            return self._check(bundle)
        with staged(bundle, Path(tempfile.gettempdir()), self._trust) as folder:
            return self._check(folder)

    def _trust(self, data: bytes, signature: bytes | None) -> Manifest:
        policy = self.policy
        return trusted_manifest(data, signature, policy.public_key, policy.require_signature)

    def _check(self, folder: Path) -> Manifest:
        manifest = verify_bundle(folder, self.policy.public_key, self.policy.require_signature)
        if self.policy.arch not in manifest.requirements:
            have = ", ".join(sorted(manifest.requirements))
            raise BundleError(f"the bundle has no wheels for {self.policy.arch} (only {have})")
        return manifest

    def apply(self, bundle: Path, wait_s: float = 0.0, force: bool = False) -> Outcome:
        """Install ``bundle`` as a new version and switch to it when no rental is under way;
        back to the old version when the new one does not turn healthy."""
        with self.layout.locked():
            self._resume()
            with staged(bundle, self.layout.root, self._trust) as folder:
                manifest = self._check(folder)
                current = self.layout.link(CURRENT)
                self._refuse_downgrade(manifest, current)
                self._install(folder, manifest)
                if manifest.version == current:
                    return Outcome("already-current", current, self.layout.link(PREVIOUS))
            self._wait_no_rental(
                wait_s, force, f"version {manifest.version} is installed but not switched to"
            )
            outcome = self._switch(manifest.version)
            self._prune()
            return outcome

    def rollback(self, wait_s: float = 0.0, force: bool = False) -> Outcome:
        with self.layout.locked():
            self._resume()
            previous = self.layout.link(PREVIOUS)
            if previous is None or self.layout.manifest(previous) is None:
                raise UpdateStateError(f"no previous version to go back to in {self.layout.root}")
            self._wait_no_rental(wait_s, force, "nothing was switched")
            return self._switch(previous)

    def _refuse_downgrade(self, manifest: Manifest, current: str | None) -> None:
        """An older build than the running one (by the signed build time) is refused: an
        old signed bundle, with the flaws since fixed, must not be put back by anyone who
        holds a copy; ``rollback`` goes back to the version before, and only to it."""
        running = self.layout.manifest(current) if current is not None else None
        if running is None or manifest.version == current:
            return
        if manifest.created_at < running.created_at:
            built = f"{manifest.created_at:%Y-%m-%d %H:%M}"
            raise BundleError(
                f"version {manifest.version} (built {built}) is older than the running "
                f"version {current} (built {running.created_at:%Y-%m-%d %H:%M}): a downgrade "
                "is refused; `kiosk update rollback` goes back to the previous version"
            )

    def _install(self, folder: Path, manifest: Manifest) -> None:
        target = self.layout.root / manifest.version
        marker = (folder / MANIFEST).read_bytes()
        if (target / MARKER).is_file() and self.layout.problem(manifest.version) is None:
            if (target / MARKER).read_bytes() != marker:
                raise BundleError(
                    f"a different build of version {manifest.version} is installed in {target}: "
                    "give the new build a new version"
                )
            log.info("update.reused", version=manifest.version)
            return
        if manifest.version in (self.layout.link(CURRENT), self.layout.link(PREVIOUS)):
            raise UpdateStateError(
                f"{target} is in use but has no {MARKER}: it was not installed from a bundle; "
                "give the new build a new version"
            )
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():  # an install cut short: start again
            shutil.rmtree(target)
        started = time.monotonic()
        log.info("update.installing", version=manifest.version, target=str(target))
        # what the services (not root) run must be readable by them: folders 0755 and files
        # 0644 whatever the umask of the technician's shell or the modes in the bundle
        umask = os.umask(0o022)
        try:
            target.mkdir(mode=0o755)
            write_atomic(target / STARTED, b"", mode=0o644)  # this folder is the install's
            fsync_dir(self.layout.root)
            self.hooks.install(folder, manifest, target, self.policy.arch)
            (target / "systemd").mkdir(mode=0o755, exist_ok=True)
            for unit in manifest.units:
                copy_plain(folder / unit, target / "systemd" / Path(unit).name)
            if (folder / SIGNATURE).is_file():
                copy_plain(folder / SIGNATURE, target / SIGNATURE)
            if (folder / "doc" / "README.md").is_file():  # kiosk-edge.service's Documentation=
                (target / "share" / "doc").mkdir(parents=True, exist_ok=True)
                copy_plain(folder / "doc" / "README.md", target / "share" / "doc" / "README.md")
            sync_tree(target)  # every file and folder on the disk before the record says so
            write_atomic(target / RECORD, release_record(target, {MARKER, STARTED}), mode=0o644)
            write_atomic(target / MARKER, marker, mode=0o644)
            (target / STARTED).unlink()
            fsync_dir(target)
            fsync_dir(self.layout.root)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        finally:
            os.umask(umask)
        log.info(
            "update.installed",
            version=manifest.version,
            seconds=round(time.monotonic() - started, 1),
        )

    def _wait_no_rental(self, wait_s: float, force: bool, consequence: str) -> None:
        if force:
            log.warning("update.forced", detail="the rental check was skipped (--force)")
            return
        deadline, waited = self.hooks.clock() + wait_s, False
        while (reason := self.hooks.rental()) is not None:
            if self.hooks.clock() >= deadline:
                raise RentalInProgressError(
                    f"a rental is in progress ({reason}): {consequence}; try again when it "
                    "has ended (or give --wait SECONDS)"
                )
            if not waited:
                log.info("update.waiting", reason=reason, seconds=wait_s)
                waited = True
            self.hooks.sleep(1.0)

    def _switch(self, version: str) -> Outcome:
        switch = Switch(version, self.layout.link(CURRENT), self.layout.link(PREVIOUS))
        write_atomic(self.layout.root / SWITCHING, switch.dump(), 0o644)
        # previous first: a cut between the two leaves current unmoved (the next run puts
        # previous back), never current moved with previous still two versions back
        if switch.old_current is not None:
            self.layout.point(PREVIOUS, switch.old_current)
        self.layout.point(CURRENT, version)
        return self._settle(switch)

    def _resume(self) -> None:
        """Finish a switch a power cut interrupted (its journal is still there): the version
        switched to is restarted and checked as the switch would have, and left when it
        does not turn healthy; a switch cut before ``current`` moved is undone."""
        path = self.layout.root / SWITCHING
        try:
            switch = Switch.load(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("update.resumed", detail=f"{SWITCHING} unreadable ({exc}): removed")
            remove_durably(path)
            return
        if self.layout.link(CURRENT) != switch.version:
            if switch.old_previous is None:
                self.layout.unpoint(PREVIOUS)
            elif self.layout.problem(switch.old_previous) is None:
                self.layout.point(PREVIOUS, switch.old_previous)
            remove_durably(path)
            log.warning("update.resumed", version=switch.version, detail="never switched to")
            return
        log.warning("update.resumed", version=switch.version, detail="checking its health")
        with contextlib.suppress(UnhealthyError):  # logged; the run goes on from the old one
            self._settle(switch)

    def _settle(self, switch: Switch) -> Outcome:
        """Restart on ``switch.version`` and keep it when healthy, else go back."""
        version, old_current, old_previous = switch.version, switch.old_current, switch.old_previous
        ok, detail = self._restart_and_check(version)
        if ok:
            remove_durably(self.layout.root / version / FAILED)
            remove_durably(self.layout.root / SWITCHING)
            log.info("update.switched", version=version, previous=old_current, health=detail)
            return Outcome("switched", version, old_current, detail)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        write_atomic(self.layout.root / version / FAILED, f"{stamp} {detail}\n".encode(), 0o644)
        if old_current is None:
            remove_durably(self.layout.root / SWITCHING)
            raise UnhealthyError(
                f"version {version} did not report healthy ({detail}); there is no earlier "
                "version to go back to"
            )
        self.layout.point(CURRENT, old_current)
        if old_previous is not None:
            self.layout.point(PREVIOUS, old_previous)
        else:
            self.layout.unpoint(PREVIOUS)
        back_ok, back_detail = self._restart_and_check(old_current)
        remove_durably(self.layout.root / SWITCHING)
        log.error(
            "update.rolled_back",
            version=version,
            back_to=old_current,
            reason=detail,
            healthy_again=back_ok,
        )
        state = "healthy again" if back_ok else f"NOT healthy either: {back_detail}"
        raise UnhealthyError(
            f"version {version} did not report healthy within {self.policy.health_timeout_s:g} s "
            f"({detail}): rolled back to {old_current}, which is {state}"
        )

    def _restart_and_check(self, version: str) -> tuple[bool, str]:
        if self.policy.unit_dir is not None:
            link_units(self.layout, version, self.policy.unit_dir)
        try:
            self.hooks.restart()
        except UpdateError as exc:
            return False, str(exc)
        policy = self.policy
        return wait_healthy(
            lambda: self.hooks.health(version),
            policy.health_timeout_s,
            policy.health_interval_s,
            policy.health_passes,
            self.hooks.clock,
            self.hooks.sleep,
        )

    def _prune(self) -> None:
        versions = [item.version for item in self.layout.installed()]
        doomed = to_prune(
            versions,
            self.layout.link(CURRENT),
            self.layout.link(PREVIOUS),
            self.policy.keep_versions,
        )
        for path in [
            *(self.layout.root / version for version in doomed),
            *self.layout.unfinished(),
        ]:
            shutil.rmtree(path, ignore_errors=True)
            log.info("update.pruned", version=path.name)
        fsync_dir(self.layout.root)


def copy_plain(source: Path, target: Path) -> None:
    """Copy a file's bytes as a plain 0644 file: no setuid bit, nothing writable by others,
    whatever the mode the bundle gave it."""
    target.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    target.chmod(0o644)
