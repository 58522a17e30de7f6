"""``kiosk doctor``: every check the kiosk needs, each with pass/fail and a one-line fix.

Results are ``pass``, ``warn`` (works, but look at it), ``fail`` (the kiosk cannot do its
job) or ``skip`` (does not apply on this machine, e.g. no systemd). The camera and the
board are opened only when the runtime is not running; when it is, they are judged by its
own report (``runtime.json``), since it holds both devices.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cloud_sync import keyfiles
from edge.ops import status as status_mod
from edge.ops.runtime_status import Component, is_live, read_runtime_status
from edge.settings import Settings
from edge.vault.keys import BOX_FILE, SIGN_FILE

Outcome = Literal["pass", "warn", "fail", "skip"]
UNITS = ("kiosk-edge.service", "kiosk-sync.service")
CHECKS = (
    "keys",
    "camera",
    "board",
    "models",
    "roster",
    "outbox",
    "disk",
    "clock",
    "cloud",
    "mqtt",
    "units",
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    detail: str
    fix: str = ""


def _result(name: str, ok: bool, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, "pass" if ok else "fail", detail, "" if ok else fix)


#: Where ``systemd-creds encrypt`` puts the kiosk's encrypted key credentials, which the
#: units load with ``LoadCredentialEncrypted=`` (docs/installing.md, "Keys at rest").
CREDSTORE = Path("/etc/credstore.encrypted")
KEY_CREDENTIALS = (keyfiles.SIGNING_CREDENTIAL, keyfiles.CREDENTIAL_NAMES[BOX_FILE])
_ENCRYPT_FIX = (
    "encrypt them as systemd credentials (systemd-creds encrypt --with-key=tpm2, or "
    "--with-key=host without a TPM2) and delete the files: docs/installing.md, Keys at rest"
)


def _credential(name: str, credstore: Path) -> str | None:
    """Where the key credential ``name`` is: the service's credentials (when the doctor
    runs inside it), or its encrypted file in the credstore; None when neither."""
    given = keyfiles.credential_path(name, name)
    if given is not None:
        return f"$CREDENTIALS_DIRECTORY/{name}"
    if (credstore / name).is_file():
        return str(credstore / name)
    return None


def check_keys(settings: Settings, credstore: Path = CREDSTORE) -> CheckResult:
    """The private keys: from systemd credentials (pass), or plain files in the state
    folder (warn: a copied SD card gives them away), never readable by others (fail)."""
    files = [
        settings.kiosk.state_dir / settings.sync.key_filename,
        settings.keys_dir / BOX_FILE,
        settings.keys_dir / SIGN_FILE,
    ]
    present = [path for path in files if path.exists()]
    too_open = []
    for path in present:
        try:
            if path.stat().st_mode & 0o077:
                too_open.append(path)
        except OSError:
            continue
    if too_open:
        names = " ".join(str(path) for path in too_open)
        return CheckResult("keys", "fail", f"readable by others: {names}", f"chmod 600 {names}")
    found = {name: _credential(name, credstore) for name in KEY_CREDENTIALS}
    if all(found.values()):
        where = ", ".join(str(place) for place in found.values())
        if present:
            names = " ".join(str(path) for path in present)
            return CheckResult(
                "keys",
                "warn",
                f"keys come from systemd credentials ({where}) but plain copies remain: {names}",
                f"delete the plain copies: shred -u {names}",
            )
        return CheckResult("keys", "pass", f"keys from encrypted systemd credentials: {where}")
    missing = [path for path in files if not path.exists()]
    if missing:
        names = ", ".join(str(path) for path in missing)
        return CheckResult(
            "keys",
            "warn",
            f"missing: {names}",
            "kiosk provision creates them (the sync key is created on first sync)",
        )
    return CheckResult(
        "keys",
        "warn",
        f"plain key files, mode 0600 (development mode; a copied SD card gives them away): "
        f"{len(files)} files in {settings.kiosk.state_dir}",
        _ENCRYPT_FIX,
    )


def _within(seconds: float, work: Callable[[], str]) -> str:
    """Run ``work`` in a thread; its answer, or raise ``TimeoutError`` after ``seconds``."""
    box: list[str | BaseException] = []

    def run() -> None:
        try:
            box.append(work())
        except BaseException as exc:  # handed to the caller below
            box.append(exc)

    thread = threading.Thread(target=run, name="doctor-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if not box:
        raise TimeoutError(f"no answer within {seconds:g} s")
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _running_report(name: str, component: Component, fix: str) -> CheckResult:
    if component.ok is None:
        return CheckResult(name, "warn", "kiosk run does not report it yet", "")
    return _result(name, component.ok, f"kiosk run reports: {component.detail}", fix)


def check_camera(settings: Settings, running: Component | None) -> CheckResult:
    fix = "check the cable and camera.kind/camera.source (kiosk config show)"
    if running is not None:
        return _running_report("camera", running, fix)
    from hardware.cameras.factory import source_for
    from hardware.config import shown_source

    def grab() -> str:
        camera = source_for(settings.camera, settings.vision.max_image_pixels)()
        try:
            frame = next(iter(camera.frames()))
        finally:
            camera.close()
        height, width = frame.image.shape[:2]
        source = shown_source(settings.camera.source) or "(default)"
        return f"{settings.camera.kind} {source}: {width}x{height}"

    try:
        detail = _within(settings.camera.open_timeout_s + 5, grab)
    except StopIteration:
        return _result("camera", False, "the camera gave no frame", fix)
    except Exception as exc:
        return _result("camera", False, f"{type(exc).__name__}: {exc}", fix)
    return _result("camera", True, detail, fix)


def check_board(settings: Settings, running: Component | None) -> CheckResult:
    fix = f"check the serial cable and board.url ({settings.board.url}); kiosk slots --cached shows the last state"
    if running is not None:
        return _running_report("board", running, fix)
    from hardware.driver import SerialBoard

    def hello() -> str:
        board = SerialBoard.from_config(settings.board).open()
        try:
            info = board.hello()
        finally:
            board.close()
        return f"firmware {info.firmware}, protocol {info.protocol}, {info.slots} slots"

    budget = settings.board.timeout_s * (settings.board.retries + 1) + 5
    try:
        return _result("board", True, _within(budget, hello), fix)
    except Exception as exc:
        return _result("board", False, f"{type(exc).__name__}: {exc}", fix)


def check_models() -> CheckResult:
    import models

    try:
        found = models.verify()
    except models.ModelError as exc:
        return _result("models", False, str(exc), "reinstall face-recognition-models (make setup)")
    return _result("models", True, f"{len(found)} files match models/manifest.json", "")


def check_roster(settings: Settings) -> CheckResult:
    part = status_mod.roster_part(settings)
    return _result(
        "roster",
        bool(part.ok),
        part.detail,
        "kiosk sync now pulls the roster from the cloud; kiosk roster info shows what is held",
    )


def check_outbox(settings: Settings) -> CheckResult:
    part = status_mod.outbox_part(settings)
    if part.ok is None:
        return CheckResult("outbox", "pass", part.detail)
    return CheckResult(
        "outbox",
        "pass" if part.ok else "warn",
        part.detail,
        ""
        if part.ok
        else "kiosk sync status shows the error; kiosk sync requeue resends quarantined events",
    )


def check_disk(settings: Settings) -> CheckResult:
    part = status_mod.disk_part(settings.kiosk.state_dir)
    return _result(
        "disk",
        bool(part.ok),
        part.detail,
        "free space: journalctl --vacuum-size=100M, kiosk events export then sync",
    )


def check_clock() -> CheckResult:
    part = status_mod.clock_part(shown=status_mod.timedatectl())
    if part.ok is None:
        return CheckResult("clock", "skip", part.detail)
    return _result(
        "clock",
        bool(part.ok),
        part.detail,
        "check the network and NTP: timedatectl timesync-status; sudo timedatectl set-ntp true",
    )


def check_cloud(settings: Settings, timeout_s: float = 5.0) -> CheckResult:
    url = settings.sync.cloud_url
    if url is None:
        return _result(
            "cloud",
            False,
            "sync.cloud_url is not set",
            "set sync.cloud_url in /etc/kiosk/kiosk.toml",
        )
    import httpx

    from cloud_sync.config import shown_url

    target = str(url).rstrip("/") + "/healthz"
    shown = shown_url(target)  # never a password in the URL
    fix = f"check the network, DNS and that {shown} answers (curl -sS {shown})"
    try:
        verify: str | bool = str(settings.sync.ca_file) if settings.sync.ca_file else True
        response = httpx.get(target, timeout=timeout_s, verify=verify)
    except httpx.HTTPError as exc:
        return _result("cloud", False, f"{shown}: {type(exc).__name__}: {exc}", fix)
    return _result(
        "cloud", response.status_code == 200, f"{shown}: HTTP {response.status_code}", fix
    )


def check_mqtt(settings: Settings) -> CheckResult:
    config = settings.mqtt
    if not config.enabled:
        return CheckResult("mqtt", "skip", "mqtt.enabled is false")
    if not config.command_public_key:
        return CheckResult(
            "mqtt",
            "warn",
            "no mqtt.command_public_key: every remote command is refused",
            "set mqtt.command_public_key to the key printed by kiosk-cloud command keygen",
        )
    return CheckResult("mqtt", "pass", f"broker {config.host}:{config.port}, command key pinned")


def check_units() -> CheckResult:
    if shutil.which("systemctl") is None or not Path("/run/systemd/system").is_dir():
        return CheckResult("units", "skip", "systemd is not running on this machine")
    states = {}
    for unit in UNITS:
        try:
            done = subprocess.run(
                ["systemctl", "is-enabled", unit],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            states[unit] = done.stdout.strip() or done.stderr.strip() or "unknown"
        except (OSError, subprocess.TimeoutExpired) as exc:
            states[unit] = str(exc)
    bad = [unit for unit, state in states.items() if state != "enabled"]
    detail = ", ".join(f"{unit} {state}" for unit, state in states.items())
    return _result("units", not bad, detail, f"sudo systemctl enable --now {' '.join(bad)}")


def run_checks(settings: Settings, skip: frozenset[str] = frozenset()) -> list[CheckResult]:
    """Every check not in ``skip``, in the order of ``CHECKS``."""
    runtime = read_runtime_status(settings.kiosk.state_dir)
    live = is_live(runtime)
    camera = runtime.camera if live and runtime else None
    board = runtime.board if live and runtime else None
    table: dict[str, Callable[[], CheckResult]] = {
        "keys": lambda: check_keys(settings),
        "camera": lambda: check_camera(settings, camera),
        "board": lambda: check_board(settings, board),
        "models": check_models,
        "roster": lambda: check_roster(settings),
        "outbox": lambda: check_outbox(settings),
        "disk": lambda: check_disk(settings),
        "clock": check_clock,
        "cloud": lambda: check_cloud(settings),
        "mqtt": lambda: check_mqtt(settings),
        "units": check_units,
    }
    results = []
    for name in CHECKS:
        if name in skip:
            results.append(CheckResult(name, "skip", "skipped (--skip)"))
        else:
            results.append(table[name]())
    return results
