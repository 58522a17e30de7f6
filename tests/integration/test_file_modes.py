"""Everything the kiosk and the cloud create is private to its owner, whatever the umask.

The commands run as subprocesses under a permissive umask (022, as a login shell has, and
000); every file and folder they made must have no group or other bits, the SQLite side
files too. Folders that existed before (``tmp_path``) are not the product's and not checked.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hardware.sim import BoardSimulator, SimConfig
from tests.helpers import BIN, CONSENT_ARGS, consent_text
from tests.integration.runtime.test_runtime import BLANK_PNG


def run(
    *args: str, umask: int, env: dict[str, str] | None = None, program: str = "kiosk"
) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("KIOSK_")}
    clean.pop("CREDENTIALS_DIRECTORY", None)
    return subprocess.run(
        [str(BIN / program), *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=180,
        check=False,
        umask=umask,
    )


def too_open(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) that group or others may use."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {mode:o}")
    return found


@pytest.mark.parametrize("umask", [0o000])
def test_enroll_makes_a_private_roster_keys_and_folders(
    tmp_path: Path, dev_faces: Path, umask: int
) -> None:
    photo = sorted((dev_faces / "person_01").glob("*.jpg"))[0]
    roster = tmp_path / "x" / "deeper" / "roster.sqlite"
    result = run(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(roster),
        "--person-id",
        "rider-1",
        str(photo),
        umask=umask,
    )
    assert result.returncode == 0, result.stderr
    assert roster.is_file() and (roster.parent / "keys").is_dir()
    assert too_open(tmp_path / "x") == []


@pytest.mark.parametrize("umask", [0o022])
def test_kiosk_run_outside_systemd_keeps_its_state_private(tmp_path: Path, umask: int) -> None:
    sim = BoardSimulator(SimConfig(slots=2, filled=2, charge_rate=50, seed=3))
    sim.start()
    state = tmp_path / "var" / "kiosk"
    images = tmp_path / "images"
    images.mkdir()
    (images / "blank.png").write_bytes(BLANK_PNG)  # an empty folder stops kiosk run at start
    config = tmp_path / "kiosk.toml"
    config.write_text(
        "\n".join(
            [
                "[kiosk]",
                'id = "kiosk-modes"',
                f'state_dir = "{state}"',
                "[camera]",
                'kind = "replay"',
                f'source = "{images}"',
                "[board]",
                f'url = "{sim.path}"',
                "slots = 2",
                "[ui]",
                "port = 0",
                "[vision.liveness]",
                'method = "off"',
                "",
            ]
        ),
        encoding="utf-8",
    )
    clean = {key: value for key, value in os.environ.items() if not key.startswith("KIOSK_")}
    process = subprocess.Popen(
        [str(BIN / "kiosk"), "--log-format", "json", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean,
        umask=umask,
    )
    try:
        deadline = time.monotonic() + 60
        wanted = ("runtime.json", "outbox.sqlite", "slots.db", "roster.sqlite")
        while not all((state / name).exists() for name in wanted):
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "kiosk run made no state in time"
            time.sleep(0.2)
        time.sleep(1.0)  # a few board events and status writes
        side_files = [p.name for p in state.iterdir() if p.name.endswith(("-wal", "-shm"))]
        assert side_files, "the running kiosk has its databases open in WAL mode"
        assert too_open(tmp_path / "var") == []
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        sim.stop()
    assert process.returncode == 0, err[-3000:]
    assert too_open(tmp_path / "var") == []


def test_cloud_keys_database_and_riders_are_private(tmp_path: Path, dev_faces: Path) -> None:
    photo = sorted((dev_faces / "person_01").glob("*.jpg"))[0]
    cloud = tmp_path / "cloud" / "data"
    db = f"sqlite:///{cloud / 'cloud.sqlite'}"
    for args in (
        ("keys", "init"),
        consent_text(tmp_path),
        ("riders", "add", "--person-id", "ann", str(photo), *CONSENT_ARGS),
        ("issue-token",),
    ):
        result = run(*args, "--database-url", db, umask=0o000, program="kiosk-cloud")
        assert result.returncode == 0, result.stderr
    assert (cloud / "cloud.sqlite").is_file()
    assert too_open(tmp_path / "cloud") == []


def test_an_existing_roster_left_readable_by_an_older_version_is_narrowed(
    tmp_path: Path, dev_faces: Path
) -> None:
    photo = sorted((dev_faces / "person_01").glob("*.jpg"))[0]
    roster = tmp_path / "roster.sqlite"
    first = run(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(roster),
        "--person-id",
        "a",
        str(photo),
        umask=0o022,
    )
    assert first.returncode == 0, first.stderr
    roster.chmod(0o644)  # as an older version left it
    again = run(
        "enroll",
        "--consent",
        "test-1",
        "--roster",
        str(roster),
        "--person-id",
        "b",
        str(photo),
        umask=0o022,
    )
    assert again.returncode == 0, again.stderr
    assert stat.S_IMODE(roster.stat().st_mode) == 0o600
