"""``kiosk update``: versioned installs, the atomic switch, refusals and automatic rollback.

Bundles are made here, tiny but real: a project wheel whose ``kiosk --version`` names its
version and a dependency wheel, pinned by hash. The ``Updater`` tests replace the installer,
restart and health probe by recorders (and the clock by a fake one); the CLI tests run the
real installer (a virtual environment made by the test, filled offline from the bundle),
real commands for restart and health, and the real rental ledger in a real outbox.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.outbox import Outbox
from edge.cabinet.rentals import Ledger
from edge.ops.runtime_status import new_status, write_runtime_status
from edge.update.bundle import (
    MANIFEST,
    SIGNATURE,
    Manifest,
    file_entries,
    manifest_bytes,
    public_key_text,
    sign_manifest,
)
from edge.update.errors import (
    BundleError,
    RentalInProgressError,
    SignatureError,
    UnhealthyError,
    UpdateError,
    UpdateStateError,
)
from edge.update.hooks import http_health, rental_in_progress
from edge.update.layout import STARTED
from edge.update.updater import FAILED, MARKER, Hooks, Layout, Policy, Updater
from tests.helpers import BIN, REPO, run_cli

pytestmark = pytest.mark.timeout(300)  # real virtual environments: slow on a loaded machine
ARCH = platform.machine()
KEY = Ed25519PrivateKey.generate()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- tiny real bundles ------------------------------------------------------------------------


def wheel(folder: Path, dist: str, version: str, files: dict[str, str], scripts: str = "") -> Path:
    """A real (tiny) wheel pip installs: METADATA, WHEEL, RECORD and the files."""
    stem = f"{dist.replace('-', '_')}-{version}"
    path = folder / f"{stem}-py3-none-any.whl"
    info = f"{stem}.dist-info"
    members = dict(files)
    members[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    members[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        members[f"{info}/entry_points.txt"] = f"[console_scripts]\n{scripts}\n"
    record = []
    for name, text in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    members[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def make_bundle(
    where: Path,
    version: str,
    key: Ed25519PrivateKey | None = KEY,
    order: int = 0,
    arch: str = ARCH,
    note: str = "",
    units: dict[str, str] | None = None,
) -> Path:
    folder = where / f"kiosk-bundle-{version}{note}"
    (folder / "wheels").mkdir(parents=True)
    program = (
        "import sys, tinydep\n"
        f"def main():\n    print('kiosk {version}' if '--version' in sys.argv else tinydep.HELLO)\n"
    )
    project = wheel(
        folder / "wheels",
        "powerbank-kiosk",
        version,
        {"tinykiosk/__init__.py": program + f"# {note}\n"},
        "kiosk = tinykiosk:main",
    )
    dependency = wheel(folder / "wheels", "tinydep", "1.0", {"tinydep.py": "HELLO = 'hello'\n"})
    digest = hashlib.sha256(dependency.read_bytes()).hexdigest()
    (folder / "requirements").mkdir()
    (folder / "requirements" / f"{arch}.txt").write_text(f"tinydep==1.0 --hash=sha256:{digest}\n")
    (folder / "requirements.lock").write_text("tinydep==1.0\n")
    (folder / "systemd").mkdir()
    for unit in sorted((REPO / "systemd").glob("*.service")):
        shutil.copy2(unit, folder / "systemd" / unit.name)
    for name, text in (units or {}).items():
        (folder / "systemd" / name).write_text(text)
    paths = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    build = Manifest.model_construct if units else Manifest  # a bad one is the kiosk's to find
    manifest = build(
        version=version,
        created_at=T0 + timedelta(days=order),
        python=f"{sys.version_info[0]}.{sys.version_info[1]}",
        project_wheel=f"wheels/{project.name}",
        requirements={arch: f"requirements/{arch}.txt"},
        units=tuple(sorted(p for p in paths if p.startswith("systemd/"))),
        files=file_entries(folder, paths),
    )
    data = manifest_bytes(manifest)
    (folder / MANIFEST).write_bytes(data)
    if key is not None:
        (folder / SIGNATURE).write_bytes(sign_manifest(data, key))
    return folder


# -- the updater with recorders in place of the system ----------------------------------------


@dataclass
class Fakes:
    healthy: set[str] = field(default_factory=set)
    rental: str | None = None
    installs: list[str] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    now: float = 0.0
    root: Path = Path()

    def install(self, bundle: Path, manifest: Manifest, target: Path, arch: str) -> None:
        (target / "bin").mkdir(parents=True)
        self.installs.append(manifest.version)

    def restart(self) -> None:
        self.restarts.append((self.root / "current").readlink().name)

    def health(self, version: str) -> tuple[bool, str]:
        self.checks.append(version)
        return version in self.healthy, f"fake probe of {version}"

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(healthy={"1.0", "2.0", "3.0"}, root=tmp_path / "opt")


def updater(fakes: Fakes, tmp_path: Path, **policy: Any) -> Updater:
    hooks = Hooks(
        install=fakes.install,
        restart=fakes.restart,
        health=fakes.health,
        rental=lambda: fakes.rental,
        clock=lambda: fakes.now,
        sleep=fakes.sleep,
    )
    settings: dict[str, Any] = {
        "public_key": public_key_text(KEY),
        "health_timeout_s": 30,
        "health_interval_s": 1,
        "health_passes": 2,
        "unit_dir": tmp_path / "units",
    }
    settings.update(policy)
    return Updater(fakes.root, hooks, Policy(**settings))


def links(root: Path) -> tuple[str | None, str | None]:
    layout = Layout(root)
    return layout.link("current"), layout.link("previous")


def test_two_versions_switch_link_units_and_roll_back(fakes: Fakes, tmp_path: Path) -> None:
    up = updater(fakes, tmp_path)
    first = up.apply(make_bundle(tmp_path, "1.0", order=1))
    assert (first.action, first.version, first.previous) == ("switched", "1.0", None)
    bundle = make_bundle(tmp_path, "2.0", order=2)
    second = up.apply(bundle)
    assert (second.action, second.previous) == ("switched", "1.0")
    assert links(fakes.root) == ("2.0", "1.0")
    assert fakes.restarts == ["1.0", "2.0"]  # each restart saw its own version as current
    assert fakes.checks.count("2.0") == 2  # two consecutive healthy answers
    unit = tmp_path / "units" / "kiosk-edge.service"
    assert unit.readlink() == fakes.root / "current" / "systemd" / "kiosk-edge.service"
    assert unit.resolve() == (fakes.root / "2.0" / "systemd" / "kiosk-edge.service").resolve()
    assert [item.version for item in Layout(fakes.root).installed()] == ["1.0", "2.0"]

    back = up.rollback()
    assert (back.version, back.previous) == ("1.0", "2.0")
    assert links(fakes.root) == ("1.0", "2.0")
    assert up.apply(bundle).action == "switched"
    assert fakes.installs == ["1.0", "2.0"]  # the installed 2.0 was reused...
    assert not list(fakes.root.glob(".incoming-*"))  # ...and the staged copies are gone


def test_applying_the_current_version_changes_nothing(fakes: Fakes, tmp_path: Path) -> None:
    up = updater(fakes, tmp_path)
    bundle = make_bundle(tmp_path, "1.0")
    up.apply(bundle)
    assert up.apply(bundle).action == "already-current"
    assert fakes.restarts == ["1.0"]


def test_a_different_build_of_an_installed_version_is_refused(fakes: Fakes, tmp_path: Path) -> None:
    up = updater(fakes, tmp_path)
    up.apply(make_bundle(tmp_path, "1.0"))
    with pytest.raises(BundleError, match=r"different build of version 1\.0"):
        up.apply(make_bundle(tmp_path, "1.0", note="-rebuilt"))


@pytest.mark.parametrize("damage", ["flip a byte", "extra file", "missing file", "unlisted sig"])
def test_bad_checksum_or_content_installs_nothing(
    fakes: Fakes, tmp_path: Path, damage: str
) -> None:
    up = updater(fakes, tmp_path)
    up.apply(make_bundle(tmp_path, "1.0"))
    bundle = make_bundle(tmp_path, "2.0")
    dependency = next((bundle / "wheels").glob("tinydep-*.whl"))
    if damage == "flip a byte":
        data = bytearray(dependency.read_bytes())
        data[40] ^= 1
        dependency.write_bytes(bytes(data))
        expected = "bad checksum"
    elif damage == "extra file":
        (bundle / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"x")
        expected = "not in its manifest"
    elif damage == "missing file":
        dependency.unlink()
        expected = "missing from the bundle"
    else:
        (bundle / "systemd" / "kiosk-evil.service").write_text("[Service]\n")
        expected = "not in its manifest"
    with pytest.raises(BundleError, match=expected):
        up.apply(bundle)
    assert links(fakes.root) == ("1.0", None)
    assert not (fakes.root / "2.0").exists()
    assert fakes.installs == ["1.0"] and fakes.restarts == ["1.0"]


def test_an_installed_version_is_readable_by_the_services_and_writable_by_root_only(
    fakes: Fakes, tmp_path: Path
) -> None:
    """A bundle folder whose unit is setuid and writable by anyone, applied from a shell
    with umask 077: the version's folders are 0755 and its files 0644 all the same."""
    bundle = make_bundle(tmp_path, "1.0")
    (bundle / "systemd" / "kiosk-edge.service").chmod(0o4777)
    (bundle / SIGNATURE).chmod(0o666)
    umask = os.umask(0o077)
    try:
        updater(fakes, tmp_path).apply(bundle)
    finally:
        os.umask(umask)
    version = fakes.root / "1.0"
    modes = {
        path.relative_to(version).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in [version, *version.rglob("*")]
    }
    assert modes["systemd/kiosk-edge.service"] == 0o644
    assert {mode for path, mode in modes.items() if (version / path).is_dir()} == {0o755}
    assert {mode for path, mode in modes.items() if (version / path).is_file()} == {0o644}


def test_a_signed_bundle_carrying_a_system_unit_is_refused_and_links_nothing(
    fakes: Fakes, tmp_path: Path
) -> None:
    """Units are linked into the system's unit folder at a switch: one named like a unit of
    the system (ssh.service) would override it with the bundle's, even signed."""
    up = updater(fakes, tmp_path)
    takeover = "[Service]\nExecStart=/bin/sh -c 'echo owned'\n"
    bundle = make_bundle(tmp_path, "2.0", units={"ssh.service": takeover})
    with pytest.raises(BundleError, match=r"'systemd/ssh\.service' is not one of the kiosk's"):
        up.apply(bundle)
    assert not (fakes.root / "2.0").exists() and fakes.installs == []
    assert not (tmp_path / "units" / "ssh.service").exists()


@pytest.mark.parametrize("signer", ["another key", "unsigned", "no key pinned"])
def test_bad_signature_installs_nothing(fakes: Fakes, tmp_path: Path, signer: str) -> None:
    up = updater(fakes, tmp_path, **({"public_key": None} if signer == "no key pinned" else {}))
    key = Ed25519PrivateKey.generate() if signer == "another key" else KEY
    bundle = make_bundle(tmp_path, "2.0", key=None if signer == "unsigned" else key)
    with pytest.raises(SignatureError):
        up.apply(bundle)
    assert not (fakes.root / "2.0").exists() and fakes.installs == []


def test_unsigned_bundles_only_when_signatures_are_not_required(
    fakes: Fakes, tmp_path: Path
) -> None:
    up = updater(fakes, tmp_path, public_key=None, require_signature=False)
    assert up.apply(make_bundle(tmp_path, "1.0", key=None)).action == "switched"


def test_an_older_signed_build_is_refused_and_rollback_goes_back_one_version(
    fakes: Fakes, tmp_path: Path
) -> None:
    """A rollback attack: 1.0, signed by the release key but built before the running 2.0,
    is refused before anything is installed or switched, also when it is still installed."""
    up = updater(fakes, tmp_path)
    old = make_bundle(tmp_path, "1.0", order=1)
    up.apply(old)
    up.apply(make_bundle(tmp_path, "2.0", order=2))
    stale = make_bundle(tmp_path, "0.9", order=0)
    for bundle in (stale, old):
        with pytest.raises(BundleError, match=r"older than the running version 2\.0.*refused"):
            up.apply(bundle)
    assert links(fakes.root) == ("2.0", "1.0") and not (fakes.root / "0.9").exists()
    assert fakes.installs == ["1.0", "2.0"] and fakes.restarts == ["1.0", "2.0"]
    assert up.rollback().version == "1.0"  # the way back is the previous version only
    fakes.healthy.add("1.5")
    assert up.apply(make_bundle(tmp_path, "1.5", order=2)).version == "1.5"  # newer than 1.0


def test_a_bundle_for_another_architecture_is_refused(fakes: Fakes, tmp_path: Path) -> None:
    other = "aarch64" if ARCH != "aarch64" else "x86_64"
    with pytest.raises(BundleError, match=f"no wheels for {ARCH}"):
        updater(fakes, tmp_path).apply(make_bundle(tmp_path, "1.0", arch=other))


def test_rental_in_progress_refuses_the_switch(fakes: Fakes, tmp_path: Path) -> None:
    """The runtime's own ledger, in a real outbox: an eject intent stops the switch."""
    state = tmp_path / "state"
    outbox = Outbox(state / "outbox.sqlite", "kiosk-test")
    ledger = Ledger(outbox)
    up = updater(fakes, tmp_path)
    up = Updater(
        fakes.root,
        Hooks(
            install=fakes.install,
            restart=fakes.restart,
            health=fakes.health,
            rental=lambda: rental_in_progress(state / "outbox.sqlite", state),
            clock=lambda: fakes.now,
            sleep=fakes.sleep,
        ),
        up.policy,
    )
    up.apply(make_bundle(tmp_path, "1.0", order=1))
    ledger.begin("01RENTAL", "rider-1", 3, "PB-7")
    bundle = make_bundle(tmp_path, "2.0", order=2)
    with pytest.raises(RentalInProgressError, match=r"1 rental\(s\).*2\.0 is installed but not"):
        up.apply(bundle, wait_s=5)
    assert fakes.now >= 5  # it waited as asked before refusing
    assert links(fakes.root) == ("1.0", None) and fakes.restarts == ["1.0"]
    with pytest.raises(RentalInProgressError):  # still under way: refused again, not reinstalled
        up.apply(bundle)
    ledger.failed("01RENTAL", "not_taken")
    outcome = up.apply(bundle)
    assert outcome.action == "switched" and links(fakes.root) == ("2.0", "1.0")
    assert fakes.installs == ["1.0", "2.0"]
    outbox.close()


def test_force_skips_the_rental_check(fakes: Fakes, tmp_path: Path) -> None:
    fakes.rental = "1 rental(s) between eject and pick-up"
    up, bundle = updater(fakes, tmp_path), make_bundle(tmp_path, "1.0")
    with pytest.raises(RentalInProgressError):
        up.apply(bundle)
    assert up.apply(bundle, force=True).action == "switched"


def test_never_healthy_rolls_back(fakes: Fakes, tmp_path: Path) -> None:
    fakes.healthy = {"1.0"}
    up = updater(fakes, tmp_path)
    up.apply(make_bundle(tmp_path, "1.0", order=1))
    bundle = make_bundle(tmp_path, "2.0", order=2)
    with pytest.raises(
        UnhealthyError,
        match=r"2\.0 did not report healthy within 30 s.*rolled back to 1\.0, which is healthy again",
    ):
        up.apply(bundle)
    assert links(fakes.root) == ("1.0", None)
    assert fakes.restarts == ["1.0", "2.0", "1.0"]
    assert 25 <= fakes.checks.count("2.0") <= 31  # asked every second until the deadline
    failed = [item for item in Layout(fakes.root).installed() if item.failed]
    assert [item.version for item in failed] == ["2.0"]
    assert "fake probe of 2.0" in (fakes.root / "2.0" / FAILED).read_text()
    fakes.healthy.add("2.0")  # fixed (say, the network is back): the same bundle goes in
    assert up.apply(bundle).action == "switched"
    assert not (fakes.root / "2.0" / FAILED).exists()


def test_a_failing_restart_rolls_back(fakes: Fakes, tmp_path: Path) -> None:
    up = updater(fakes, tmp_path)
    up.apply(make_bundle(tmp_path, "1.0", order=1))

    def restart() -> None:
        fakes.restart()
        if fakes.restarts[-1] == "2.0":
            raise UpdateError("systemctl restart failed (exit 1): Unit kiosk-edge.service failed")

    hooks = Hooks(fakes.install, restart, fakes.health, lambda: None, lambda: 0.0, fakes.sleep)
    failing = Updater(fakes.root, hooks, up.policy)
    with pytest.raises(UnhealthyError, match="systemctl restart failed"):
        failing.apply(make_bundle(tmp_path, "2.0", order=2))
    assert links(fakes.root) == ("1.0", None)


def test_tar_bundles_and_pruning(fakes: Fakes, tmp_path: Path) -> None:
    fakes.healthy.add("4.0")
    up = updater(fakes, tmp_path, keep_versions=2)
    for order, version in enumerate(["1.0", "2.0", "3.0", "4.0"], start=1):
        folder = make_bundle(tmp_path, version, order=order)
        archive = tmp_path / f"{folder.name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
        shutil.rmtree(folder)
        up.apply(archive)
    assert links(fakes.root) == ("4.0", "3.0")
    assert [item.version for item in Layout(fakes.root).installed()] == ["3.0", "4.0"]


def test_an_unfinished_install_is_redone(fakes: Fakes, tmp_path: Path) -> None:
    (fakes.root / "1.0" / "bin").mkdir(parents=True)  # a power cut during the install
    updater(fakes, tmp_path).apply(make_bundle(tmp_path, "1.0"))
    assert fakes.installs == ["1.0"] and links(fakes.root) == ("1.0", None)


def test_only_folders_an_install_made_are_discarded_as_unfinished(
    fakes: Fakes, tmp_path: Path
) -> None:
    """``update.root`` set to a shared folder: a program's folder there with a version-like
    name (``1password``) is never deleted; an install cut short (its start mark inside) is."""
    theirs = fakes.root / "1password"
    (theirs / "bin").mkdir(parents=True)
    (theirs / "bin" / "op").write_text("their program")
    cut = fakes.root / "2.0"
    (cut / "bin").mkdir(parents=True)  # a power cut during the install of 2.0
    (cut / STARTED).write_bytes(b"")
    updater(fakes, tmp_path).apply(make_bundle(tmp_path, "1.0"))
    assert (theirs / "bin" / "op").read_text() == "their program"
    assert not cut.exists()
    assert links(fakes.root) == ("1.0", None)
    assert not (fakes.root / "1.0" / STARTED).exists()  # gone once the install is whole


@pytest.mark.parametrize("damage", ["a unit cut short", "an empty marker"])
def test_a_link_left_on_a_version_a_cut_damaged_goes_back_and_the_version_is_redone(
    fakes: Fakes, tmp_path: Path, damage: str
) -> None:
    """What a power cut leaves when a version's files were not on the disk at the switch:
    the next run never keeps ``current`` on it, and installs it again."""
    up = updater(fakes, tmp_path)
    up.apply(make_bundle(tmp_path, "1.0", order=1))
    bundle = make_bundle(tmp_path, "2.0", order=2)
    up.apply(bundle)
    if damage == "a unit cut short":
        (fakes.root / "2.0" / "systemd" / "kiosk-edge.service").write_bytes(b"")
    else:
        (fakes.root / "2.0" / MARKER).write_bytes(b"")
    layout = Layout(fakes.root)
    assert layout.problem("2.0") is not None
    assert [item.version for item in layout.installed()] == ["1.0"]
    shown = run_cli("--config", str(write_config(tmp_path)), "update", "status")
    assert shown.returncode == 0 and "current:  2.0\n  damaged (" in shown.stdout, shown.stderr
    with pytest.raises(UpdateStateError, match="no previous version"):
        up.rollback()  # the run put current back on 1.0 first: nothing is left to go back to
    assert links(fakes.root) == ("1.0", None) and not (fakes.root / "2.0").exists()
    assert up.apply(bundle).action == "switched"
    assert fakes.installs == ["1.0", "2.0", "2.0"] and links(fakes.root) == ("2.0", "1.0")
    assert layout.problem("2.0", deep=True) is None


class PowerCut(BaseException):
    """The power goes: nothing after it runs (no cleanup, no rollback)."""


@pytest.mark.parametrize("healthy", [True, False])
def test_a_switch_cut_before_its_health_check_is_checked_by_the_next_run(
    fakes: Fakes, tmp_path: Path, healthy: bool
) -> None:
    up = updater(fakes, tmp_path)
    first = make_bundle(tmp_path, "1.0", order=1)
    up.apply(first)
    fakes.healthy = {"1.0", "2.0", "3.0"} if healthy else {"1.0", "3.0"}
    real_restart = fakes.restart

    def cut_at_the_restart() -> None:
        real_restart()
        raise PowerCut

    cut = updater(fakes, tmp_path)
    object.__setattr__(cut.hooks, "restart", cut_at_the_restart)
    with pytest.raises(PowerCut):
        cut.apply(make_bundle(tmp_path, "2.0", order=2))
    assert links(fakes.root) == ("2.0", "1.0") and "2.0" not in fakes.checks  # not checked

    up.apply(make_bundle(tmp_path, "3.0", order=3))  # the next run checks 2.0 first
    assert fakes.checks.count("2.0") >= 2
    if healthy:
        assert links(fakes.root) == ("3.0", "2.0")  # then goes on to switch to 3.0
    else:
        assert links(fakes.root) == ("3.0", "1.0")  # back on 1.0 first, then on to 3.0
        failed = [item.version for item in Layout(fakes.root).installed() if item.failed]
        assert failed == ["2.0"]
    assert not (fakes.root / ".switching.json").exists()


@pytest.mark.parametrize("healthy", [True, False])
@pytest.mark.parametrize("cut_after", [1, 2, 3])
def test_a_cut_between_link_moves_leaves_rollback_going_to_the_version_before(
    fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, healthy: bool, cut_after: int
) -> None:
    """The power goes after the first, second or third link moved by an update from 2.0 to
    3.0 (the switch, or the way back when 3.0 is unhealthy): whichever version the next
    run settles on, ``rollback`` then goes to the one that ran before it, never further."""
    up = updater(fakes, tmp_path)
    up.apply(make_bundle(tmp_path, "1.0", order=1))
    up.apply(make_bundle(tmp_path, "2.0", order=2))
    fakes.healthy = {"1.0", "2.0", "3.0"} if healthy else {"1.0", "2.0"}
    moves: list[str] = []
    real_point = Layout.point

    def point_then_cut(self: Layout, name: str, version: str) -> None:
        real_point(self, name, version)
        moves.append(f"{name}->{version}")
        if len(moves) == cut_after:
            raise PowerCut

    monkeypatch.setattr(Layout, "point", point_then_cut)
    with contextlib.suppress(PowerCut, UnhealthyError):
        up.apply(make_bundle(tmp_path, "3.0", order=3))
    monkeypatch.setattr(Layout, "point", real_point)

    back = up.rollback()  # settles what the cut left first, then goes back one version
    assert (back.previous, back.version) in (("3.0", "2.0"), ("2.0", "1.0")), moves


def test_a_torn_failed_note_is_read_without_an_error(fakes: Fakes, tmp_path: Path) -> None:
    updater(fakes, tmp_path).apply(make_bundle(tmp_path, "1.0"))
    (fakes.root / "1.0" / FAILED).write_bytes(b"\xff\xfe")
    assert [item.failed for item in Layout(fakes.root).installed()] == ["\ufffd\ufffd"]


def test_a_version_in_use_is_never_reinstalled_over(fakes: Fakes, tmp_path: Path) -> None:
    (fakes.root / "1.0" / "bin").mkdir(parents=True)  # installed by hand, no marker
    (fakes.root / "current").symlink_to("1.0")
    with pytest.raises(UpdateStateError, match="in use"):
        updater(fakes, tmp_path).apply(make_bundle(tmp_path, "1.0"))
    assert (fakes.root / "1.0" / "bin").is_dir() and fakes.installs == []


def test_a_truncated_archive_is_refused_in_one_line(fakes: Fakes, tmp_path: Path) -> None:
    folder = make_bundle(tmp_path, "1.0")
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(BundleError, match="not a readable bundle archive"):
        updater(fakes, tmp_path).apply(archive)
    assert not (fakes.root / "1.0").exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "link"])
def test_an_archive_reaching_outside_is_refused(fakes: Fakes, tmp_path: Path, member: str) -> None:
    folder = make_bundle(tmp_path, "1.0")
    archive = tmp_path / "bundle.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=folder.name)
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(BundleError, match="not allowed in a bundle"):
        updater(fakes, tmp_path).apply(archive)
    assert not (tmp_path / "evil.txt").exists() and fakes.installs == []


def archive_with(folder: Path, extra: str, size: int, replace: str = "") -> Path:
    """``folder`` as a .tar.gz, with one more member of ``size`` zero bytes (``extra``), or
    with the member ``replace`` made ``size`` bytes; cheap to compress, costly to unpack."""
    archive = folder.with_name(f"{folder.name}.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            name = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            if path.relative_to(folder).as_posix() == replace:
                info = tarfile.TarInfo(name)
                info.size = size
                tar.addfile(info, io.BytesIO(bytes(size)))
            else:
                tar.add(path, arcname=name, recursive=False)
        if extra:
            info = tarfile.TarInfo(f"{folder.name}/{extra}")
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return archive


def archive_declaring(where: Path, size: int) -> Path:
    """A .tar.gz whose one member's header declares ``size`` bytes (a bomb's headers)."""
    info = tarfile.TarInfo("kiosk-bundle/wheels/huge.whl")
    info.size = size
    path = where / "declared.tar.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
        handle.write(bytes(64 * 1024))
    return path


def kiosk_with_file_size_limit(*args: str, limit: int) -> subprocess.CompletedProcess[str]:
    """``kiosk ARGS`` unable to write any file larger than ``limit`` bytes."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {key: value for key, value in os.environ.items() if not key.startswith("KIOSK_")}
    return subprocess.run(
        [str(BIN / "kiosk"), *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=cap,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("attack", ["forged", "unlisted", "larger", "twice", "declared"])
def test_an_archive_unpacks_nothing_its_signed_manifest_does_not_list(
    tmp_path: Path, attack: str
) -> None:
    """Archives from anywhere: a bomb signed by another key, a signed bundle with a big
    member its manifest does not list, a listed member larger than the manifest says or
    named twice, or headers declaring more than the disk holds. Each is refused in one line before any
    of it is written (the command cannot write a file larger than 8 MB here)."""
    config = write_config(tmp_path)
    big = 48 * 1024 * 1024
    if attack == "forged":
        folder = make_bundle(tmp_path, "2.0", key=Ed25519PrivateKey.generate())
        archive = archive_with(folder, "wheels/bomb.whl", big)
        expected = "bad signature: manifest.json is not signed by the release key"
    elif attack == "unlisted":
        archive = archive_with(make_bundle(tmp_path, "2.0"), "wheels/bomb.whl", big)
        expected = "wheels/bomb.whl: in the bundle but not in its manifest"
    elif attack == "larger":
        folder = make_bundle(tmp_path, "2.0")
        dependency = next((folder / "wheels").glob("tinydep-*.whl")).relative_to(folder)
        archive = archive_with(folder, "", big, replace=dependency.as_posix())
        expected = f"{dependency.as_posix()}: {big} bytes, the manifest says"
    elif attack == "twice":
        folder = make_bundle(tmp_path, "2.0")
        archive = archive_with(folder, "systemd/kiosk-edge.service", 1000)
        expected = "kiosk-edge.service: in the archive twice"
    else:
        archive = archive_declaring(tmp_path, 2**50)
        expected = "unpacked it takes more than the"
    for command in ("verify", "apply"):
        result = kiosk_with_file_size_limit(
            "--config", str(config), "update", command, str(archive), limit=8 * 1024 * 1024
        )
        errors = [line for line in result.stderr.splitlines() if line.startswith("kiosk:")]
        assert result.returncode == 4, result.stderr
        assert len(errors) == 1 and expected in errors[0], result.stderr
    opt = tmp_path / "opt"
    assert not opt.exists() or sorted(path.name for path in opt.iterdir()) == [".update.lock"]


# -- the probes -------------------------------------------------------------------------------


@pytest.fixture
def health_server() -> Iterator[tuple[str, dict[str, Any]]]:
    answer: dict[str, Any] = {"status": 200, "body": {"status": "ok", "version": "2.0"}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answer["body"]).encode()
            self.send_response(answer["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/healthz", answer
    server.shutdown()
    server.server_close()


def test_http_health_probe(health_server: tuple[str, dict[str, Any]]) -> None:
    url, answer = health_server
    check = http_health(url, timeout_s=2)
    assert check("2.0") == (True, f"{url}: HTTP 200")
    ok, detail = check("3.0")
    assert not ok and "from version 2.0, not 3.0" in detail
    answer["body"] = {"status": "ok"}  # a runtime that does not name its version
    assert check("3.0")[0]
    answer["status"] = 503
    assert check("2.0") == (False, f"{url}: HTTP 503")
    closed = http_health("http://127.0.0.1:9/healthz", timeout_s=1)("2.0")
    assert not closed[0] and "ConnectError" in closed[1]


def test_rental_check_reads_the_ledger_and_the_runtime_report(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert rental_in_progress(state / "outbox.sqlite", state) is None  # no outbox yet
    outbox = Outbox(state / "outbox.sqlite", "kiosk-test")
    assert rental_in_progress(outbox.path, state) is None  # no rentals table yet
    Ledger(outbox)
    assert rental_in_progress(outbox.path, state) is None
    write_runtime_status(state, new_status(phase="take"))
    assert rental_in_progress(outbox.path, state) == "the runtime is in the take phase"
    write_runtime_status(state, new_status(phase="idle"))
    assert rental_in_progress(outbox.path, state) is None
    outbox.close()
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"not a database" * 100)
    with pytest.raises(UpdateError, match="cannot tell whether a rental is in progress"):
        rental_in_progress(damaged, state)  # unknown is never taken for "no rental"


def test_rental_check_leaves_no_side_files_beside_a_closed_outbox(tmp_path: Path) -> None:
    """``kiosk update`` while the kiosk is stopped: the outbox is read, nothing is left."""
    state = tmp_path / "state"
    outbox = Outbox(state / "outbox.sqlite", "kiosk-test")
    Ledger(outbox).begin("01RENTAL", "rider-1", 3, "PB-7")
    outbox.close()
    before = sorted(entry.name for entry in state.iterdir())
    content = outbox.path.read_bytes()
    assert "outbox.sqlite-wal" not in before
    assert rental_in_progress(outbox.path, state) == "1 rental(s) between eject and pick-up"
    assert sorted(entry.name for entry in state.iterdir()) == before
    assert outbox.path.read_bytes() == content
    folder = tmp_path / "a-folder.sqlite"
    folder.mkdir()
    with pytest.raises(UpdateError, match="cannot tell whether a rental is in progress"):
        rental_in_progress(folder, state)


# -- the command, with the real installer -----------------------------------------------------


def write_config(tmp_path: Path, **update: Any) -> Path:
    log = tmp_path / "restarts.log"
    restart = f"import pathlib; p = pathlib.Path({str(log)!r}); p.open('a').write('restart\\n')"
    health = "import os, sys; sys.exit(os.environ['KIOSK_UPDATE_VERSION'] == '3.0')"
    section: dict[str, Any] = {
        "root": str(tmp_path / "opt"),
        "unit_dir": str(tmp_path / "units"),
        "release_public_key": public_key_text(KEY),
        "python": sys.executable,
        "system_site_packages": False,
        "restart_commands": [[sys.executable, "-c", restart]],
        "health_command": [sys.executable, "-c", health],
        "health_timeout_s": 1.0,
        "health_interval_s": 0.2,
        "health_passes": 1,
    }
    section.update(update)
    config = tmp_path / "kiosk.toml"
    data = {"kiosk": {"id": "kiosk-test", "state_dir": str(tmp_path / "state")}, "update": section}
    config.write_text(tomli_w.dumps(data), encoding="utf-8")
    return config


def status(config: Path) -> dict[str, Any]:
    result = run_cli("--config", str(config), "update", "status", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    from jsonschema import Draft202012Validator

    schema = json.loads((REPO / "edge" / "ops" / "schemas" / "update-status.json").read_text())
    errors = list(
        Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        ).iter_errors(data)
    )
    assert not errors, [e.message for e in errors]
    return data


def test_kiosk_update_end_to_end_with_real_virtual_environments(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    opt = tmp_path / "opt"
    kiosk = opt / "current" / "bin" / "kiosk"
    bundles = {v: make_bundle(tmp_path, v, order=i) for i, v in enumerate(["1.0", "2.0", "3.0"])}

    first = run_cli("--config", str(config), "update", "apply", str(bundles["1.0"]))
    assert first.returncode == 0, first.stderr
    assert "now running version 1.0" in first.stdout
    assert (
        subprocess.run([kiosk, "--version"], capture_output=True, text=True).stdout == "kiosk 1.0\n"
    )
    assert (
        subprocess.run([kiosk], capture_output=True, text=True).stdout == "hello\n"
    )  # its dependency

    second = run_cli("--config", str(config), "update", "apply", str(bundles["2.0"]))
    assert second.returncode == 0 and "now running version 2.0 (was 1.0)" in second.stdout
    assert (
        subprocess.run([kiosk, "--version"], capture_output=True, text=True).stdout == "kiosk 2.0\n"
    )

    third = run_cli("--config", str(config), "update", "apply", str(bundles["3.0"]))
    assert third.returncode == 1
    errors = [line for line in third.stderr.splitlines() if line.startswith("kiosk: error")]
    assert len(errors) == 1 and "rolled back to 2.0, which is healthy again" in errors[0]
    data = status(config)
    assert (data["current"], data["previous"]) == ("2.0", "1.0")
    assert [(v["version"], bool(v["failed"])) for v in data["available"]] == [
        ("1.0", False),
        ("2.0", False),
        ("3.0", True),
    ]
    assert (tmp_path / "restarts.log").read_text().count("restart") == 4  # 1, 2, 3 and back to 2

    back = run_cli("--config", str(config), "update", "rollback")
    assert back.returncode == 0 and "now running version 1.0 (was 2.0)" in back.stdout
    assert (tmp_path / "units" / "kiosk-edge.service").resolve() == (
        opt / "1.0" / "systemd" / "kiosk-edge.service"
    ).resolve()
    text = run_cli("--config", str(config), "update", "status")
    assert "current:  1.0" in text.stdout and "failed its health check" in text.stdout


def test_kiosk_update_refusals_are_one_line_and_change_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert (
        run_cli(
            "--config", str(config), "update", "apply", str(make_bundle(tmp_path, "1.0"))
        ).returncode
        == 0
    )

    forged = make_bundle(tmp_path, "2.0", key=Ed25519PrivateKey.generate())
    result = run_cli("--config", str(config), "update", "apply", str(forged))
    assert result.returncode == 4
    assert result.stderr.splitlines()[-1] == (
        "kiosk: error: bad signature: manifest.json is not signed by the release key this kiosk "
        "trusts"
    )
    verify = run_cli("--config", str(config), "update", "verify", str(forged))
    assert verify.returncode == 4 and "bad signature" in verify.stderr

    good = make_bundle(tmp_path, "2.0", note="-good")
    verify = run_cli("--config", str(config), "update", "verify", str(good))
    assert verify.returncode == 0 and "signature and checksums ok" in verify.stdout

    outbox = Outbox(tmp_path / "state" / "outbox.sqlite", "kiosk-test")
    Ledger(outbox).begin("01RENTAL", "rider-1", 2, "PB-1")
    outbox.close()
    busy = run_cli("--config", str(config), "update", "apply", str(good))
    assert busy.returncode == 1 and "a rental is in progress" in busy.stderr
    assert status(config)["current"] == "1.0"
    assert (tmp_path / "restarts.log").read_text().count("restart") == 1
