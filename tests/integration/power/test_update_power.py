"""``kiosk update`` cut by the power: half-way through copying the new version, after the
copy but before the switch, and just after ``current`` was switched. After the reboot,
``current`` points at a complete version whose files are those of its bundle (checked
against the bundle's manifest and wheels), the next ``kiosk update apply`` finishes the
update, and ``kiosk update status`` and ``kiosk status`` answer.

The real ``Updater`` runs in a process (``update_part``) that is killed at the point, then
the power is cut; its installer unpacks the wheels instead of running pip (seconds, not
minutes), so what is under test is the updater's copy, marker and switch."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomli_w

from edge.update.bundle import MANIFEST, parse_manifest
from edge.update.updater import CURRENT, MARKER, SWITCHING, Layout
from tests.helpers import run_cli
from tests.integration.power.kit import ROOT, fsync_tree
from tests.integration.power.lazyfs import PowerFolder
from tests.integration.power.update_part import updater
from tests.integration.update.test_update import make_bundle

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


def release_problems(root: Path, version: str, bundle: Path) -> list[str]:
    """How the installed ``version`` differs from its bundle ([] when it is whole)."""
    folder, problems = root / version, []
    data = (bundle / MANIFEST).read_bytes()
    manifest = parse_manifest(data)
    if (folder / MARKER).read_bytes() != data:
        problems.append(f"{MARKER} is not the bundle's manifest")
    for unit in manifest.units:
        entry = manifest.entry(unit)
        installed = folder / "systemd" / Path(unit).name
        digest = hashlib.sha256(installed.read_bytes()).hexdigest() if installed.exists() else ""
        if entry is None or digest != entry.sha256:
            problems.append(f"{unit} differs from the manifest's sha256")
    for wheel in sorted((bundle / "wheels").glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                path = folder / "lib" / name
                if not path.is_file() or path.read_bytes() != archive.read(name):
                    problems.append(f"lib/{name} is not the wheel's")
    if not (folder / "bin" / "kiosk").read_bytes().startswith(b"#!"):
        problems.append("bin/kiosk is empty")
    return problems


def cli_answers(power: PowerFolder, root: Path) -> None:
    config = power.work / "kiosk.toml"
    update = {"root": str(root), "require_signature": False}
    data = {"kiosk": {"id": "kiosk-test", "state_dir": str(power.work / "state")}, "update": update}
    config.write_text(tomli_w.dumps(data), encoding="utf-8")
    for command in (("update", "status"), ("update", "status", "--json"), ("status",)):
        result = run_cli("--config", str(config), *command)
        assert "Traceback" not in result.stderr + result.stdout, (command, result.stderr)
        assert result.returncode in (0, 1), (command, result.returncode, result.stderr)


@pytest.mark.parametrize("point", ["mid-copy", "before-switch", "after-switch"])
def test_an_update_cut_by_the_power_leaves_a_whole_version_and_finishes_next_time(
    power: PowerFolder, tmp_path: Path, point: str
) -> None:
    bundles = {version: make_bundle(tmp_path, version) for version in ("1.0", "2.0")}
    root = power.path / "opt"
    updater(root, None).apply(bundles["1.0"])
    fsync_tree(root)  # version 1.0 was on the disk long before
    part = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.power.update_part",
            str(root),
            str(bundles["2.0"]),
            point,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert part.stdout is not None
        seen = []
        for line in part.stdout:  # the updater's log lines, then the point (or the end)
            seen.append(line.strip())
            if seen[-1] == f"at {point}":
                break
        assert seen[-1:] == [f"at {point}"], seen
    finally:
        part.kill()
        part.wait(10)
    power.cut()
    power.mount()

    layout = Layout(root)
    current = layout.link(CURRENT)
    assert current in ("1.0", "2.0")
    assert release_problems(root, current, bundles[current]) == []
    # a switch cut before its health check leaves its journal: the next run checks
    assert (root / SWITCHING).is_file() == (point == "after-switch")
    cli_answers(power, root)

    outcome = updater(root, None).apply(bundles["2.0"])  # the next run finishes the update
    assert outcome.version == "2.0" and layout.link(CURRENT) == "2.0"
    assert release_problems(root, "2.0", bundles["2.0"]) == []
    cli_answers(power, root)
