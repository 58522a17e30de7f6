"""The appliance's systemd units and the cloud's: valid for systemd, the services locked down.

``systemd-analyze verify`` insists that every ExecStart program exists, so the test
checks a copy of each unit in which the installed paths (``/opt/kiosk/current/bin/kiosk``,
the cloud's ``/opt/kiosk-cloud/bin/kiosk-cloud``, and the screen's compositor and browser
when this machine lacks them) point at programs that exist here; everything else in the
unit is verified as shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.helpers import REPO

UNITS = sorted((REPO / "systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
KIOSK = Path(sys.executable).parent / "kiosk"
KIOSK_CLOUD = Path(sys.executable).parent / "kiosk-cloud"


def local_copy(unit: Path, folder: Path) -> Path:
    text = unit.read_text(encoding="utf-8")
    text = text.replace("/opt/kiosk/current/bin/kiosk-screen", str(REPO / "scripts/kiosk-screen"))
    text = text.replace("/opt/kiosk/current/bin/kiosk", str(KIOSK))
    text = text.replace("/opt/kiosk-cloud/bin/kiosk-cloud", str(KIOSK_CLOUD))
    for program in ("/usr/bin/cage", "/usr/bin/chromium"):
        if not Path(program).exists():
            text = text.replace(program, "/bin/true")
    copy = folder / unit.name
    copy.write_text(text, encoding="utf-8")
    return copy


def test_the_units_ship() -> None:
    assert [unit.name for unit in UNITS] == [
        "kiosk-cloud.service",
        "kiosk-edge.service",
        "kiosk-provision.service",
        "kiosk-sync.service",
        "kiosk-ui.service",
    ]


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    need(ANALYZE is not None, "systemd-analyze")
    result = subprocess.run(
        [str(ANALYZE), "verify", str(local_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr and "Ignoring" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "name", ["kiosk-edge.service", "kiosk-sync.service", "kiosk-cloud.service"]
)
def test_services_are_locked_down(name: str, tmp_path: Path) -> None:
    need(ANALYZE is not None, "systemd-analyze")
    result = subprocess.run(
        [
            str(ANALYZE),
            "security",
            "--offline=yes",
            str(local_copy(REPO / "systemd" / name, tmp_path)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.5, result.stdout


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_no_service_leaves_a_core_dump_or_swaps_faces_to_the_card(unit: Path) -> None:
    """Memory holds in clear what disks hold sealed (the roster, frames, keys): no unit
    lets a crash write it to a core file, and the kiosk's never swap it to the SD card."""
    text = unit.read_text(encoding="utf-8")
    assert re.search(r"^LimitCORE=0$", text, flags=re.MULTILINE), unit.name
    if unit.name in ("kiosk-edge.service", "kiosk-sync.service", "kiosk-ui.service"):
        assert re.search(r"^MemorySwapMax=0$", text, flags=re.MULTILINE), unit.name


def test_edge_service_has_the_agreed_shape() -> None:
    text = (REPO / "systemd" / "kiosk-edge.service").read_text(encoding="utf-8")
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "User=kiosk",
        "SupplementaryGroups=dialout video",
        "StateDirectory=kiosk",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "DevicePolicy=closed",
        "DeviceAllow=/dev/ttyAMA0 rw",
    ):
        assert line in text, line
    assert re.search(r"^WatchdogSec=\d+", text, flags=re.MULTILINE)
    assert re.search(r"^RestrictAddressFamilies=", text, flags=re.MULTILINE)


def test_cloud_service_has_the_agreed_shape() -> None:
    text = (REPO / "systemd" / "kiosk-cloud.service").read_text(encoding="utf-8")
    for line in (
        "ExecStart=/opt/kiosk-cloud/bin/kiosk-cloud serve\n",
        "Restart=on-failure",
        "User=kiosk-cloud",
        "StateDirectory=kiosk-cloud",
        "WorkingDirectory=/var/lib/kiosk-cloud",
        "EnvironmentFile=-/etc/kiosk-cloud/cloud.env",  # the operator's settings, optional
        "ProtectSystem=strict",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
    ):
        assert line in text, line
    # uvicorn workers are a setting (KIOSK_CLOUD_WORKERS), read by kiosk-cloud serve
    assert re.search(r"^Environment=KIOSK_CLOUD_WORKERS=\d+$", text, flags=re.MULTILINE)
    assert "SupplementaryGroups" not in text and "DeviceAllow" not in text
