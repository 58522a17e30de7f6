"""``kiosk update``, the parts that touch the system: the installer (a virtual environment
filled offline from the bundle's wheels, hash-checked), the restart commands, the health
probes (an HTTP GET or a command) and the read-only check that no rental is under way.
Each is one callable, so ``edge.update.updater.Updater`` is tested with others in their place.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from cloud_sync.private_files import connect_read_only
from edge.ops.runtime_status import is_live, read_runtime_status
from edge.update.bundle import Manifest
from edge.update.errors import UpdateError


def clean_env() -> dict[str, str]:
    """The environment for pip: no PIP_* settings and no pip.conf, so only the bundle counts."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(command: Sequence[str], what: str, timeout_s: float = 1800) -> str:
    try:
        result = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout_s, env=clean_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpdateError(f"{what}: {command[0]}: {exc}") from None
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise UpdateError(f"{what} failed (exit {result.returncode}): {last[0]}")
    return result.stdout


@dataclass(frozen=True)
class VenvInstaller:
    """Install a verified bundle into a new virtual environment, offline, hash-checked."""

    python: Path
    system_site_packages: bool = True

    def __call__(self, bundle: Path, manifest: Manifest, target: Path, arch: str) -> None:
        venv = [str(self.python), "-m", "venv"]
        run(
            [
                *venv,
                *(["--system-site-packages"] if self.system_site_packages else []),
                str(target),
            ],
            "creating the virtual environment",
        )
        pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--no-index", "--no-deps"]
        wheels = bundle / "wheels"
        requirements = bundle / manifest.requirements[arch]
        run(
            [*pip, "--find-links", str(wheels), "--require-hashes", "-r", str(requirements)],
            "installing the dependencies",
        )
        run([*pip, str(bundle / manifest.project_wheel)], "installing the kiosk")
        shown = run([str(target / "bin" / "kiosk"), "--version"], "kiosk --version")
        if manifest.version not in shown.split():
            raise UpdateError(f"the installed kiosk says {shown.strip()!r}, not {manifest.version}")


# -- services, health and rentals -------------------------------------------------------------


def restart_with(commands: Sequence[Sequence[str]]) -> Callable[[], None]:
    def restart() -> None:
        for command in commands:
            run(command, " ".join(command), timeout_s=300)

    return restart


def http_health(url: str, timeout_s: float = 3.0) -> Callable[[str], tuple[bool, str]]:
    """Healthy: HTTP 200 from ``url`` and, when the body names a version, the one expected."""

    def check(version: str) -> tuple[bool, str]:
        try:
            response = httpx.get(url, timeout=timeout_s)
        except httpx.HTTPError as exc:
            return False, f"{url}: {type(exc).__name__}: {exc}"
        detail = f"{url}: HTTP {response.status_code}"
        if response.status_code != 200:
            return False, detail
        with contextlib.suppress(ValueError, AttributeError):
            reported = response.json().get("version")
            if reported is not None and reported != version:
                return False, f"{detail} from version {reported}, not {version}"
        return True, detail

    return check


def command_health(command: Sequence[str]) -> Callable[[str], tuple[bool, str]]:
    """Healthy: ``command`` exits 0 (it gets KIOSK_UPDATE_VERSION in its environment)."""

    def check(version: str) -> tuple[bool, str]:
        env = {**os.environ, "KIOSK_UPDATE_VERSION": version}
        try:
            result = subprocess.run(
                list(command), capture_output=True, text=True, timeout=60, env=env
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"{command[0]}: {exc}"
        return result.returncode == 0, f"{command[0]}: exit {result.returncode}"

    return check


def rental_in_progress(outbox_path: Path, state_dir: Path) -> str | None:
    """Why a rental is under way (read-only), or None: an eject intent not settled in the
    outbox's rentals table, or a live runtime reporting the eject, confirm or take phase.
    The outbox is opened without creating anything beside it (``connect_read_only``)."""
    status = read_runtime_status(state_dir)
    if (
        is_live(status)
        and status is not None
        and status.phase in ("ejecting", "confirming", "take")
    ):
        return f"the runtime is in the {status.phase} phase"
    unknown = f"cannot tell whether a rental is in progress: {outbox_path}"
    try:
        if not outbox_path.exists():
            return None
        if not outbox_path.is_file():
            raise UpdateError(f"{unknown}: not a file")
        with contextlib.closing(connect_read_only(outbox_path)) as db:
            row = db.execute("SELECT COUNT(*) FROM rentals WHERE state = 'ejecting'").fetchone()
    except FileNotFoundError:  # removed between the look and the opening
        return None
    except PermissionError:
        raise UpdateError(f"{unknown}: permission denied (run with sudo)") from None
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return None
        raise UpdateError(f"{unknown}: {exc}") from None
    count = int(row[0])
    return f"{count} rental(s) between eject and pick-up" if count else None
