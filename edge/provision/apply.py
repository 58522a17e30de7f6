"""``kiosk provision``, the I/O part: carry out the plan of ``edge.provision.plan`` one step at a
time (keys, first-boot files, registration, settings, cleanup), recording each step in the
journal as soon as it is done; docs/provisioning.md says what goes where.

The kiosk's one Ed25519 identity is the sync client's key file (read by
``cloud_sync.signing.kiosk_key``); the same key is copied to ``<keys_dir>``, where
``DeviceKeys`` loads it, so the two never differ. Every file is written to a temporary
name, fsynced and renamed into place.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_before_delay

from cloud_sync import files, keyfiles
from cloud_sync.backoff import BackoffPolicy, wait_full_jitter
from cloud_sync.errors import (
    CloudAuthError,
    CloudRejectedError,
    CloudUnavailableError,
    SigningKeyError,
)
from cloud_sync.sealing import raw_public
from cloud_sync.signing import kiosk_key, public_key_text
from edge.provision.errors import ProvisionFileError, ProvisionStateError, TokenRefusedError
from edge.provision.plan import (
    JOURNAL_NAME,
    Journal,
    Plan,
    ProvisionFile,
    Registration,
    Step,
    check_config,
    first_boot_files,
    parse_provision_file,
    plan,
    refusal,
    render_config,
)
from edge.settings import Settings, read_toml
from edge.vault.keys import BOX_FILE, SIGN_FILE, device_keys

log = structlog.get_logger("edge.provision")

PROVISION_PATH = "/v1/provision"
CONFIG_GROUP = "kiosk"  # the services' group: may read kiosk.toml
RETRY = BackoffPolicy(base_s=1.0, cap_s=30.0, retry_after_cap_s=120.0)
Say = Callable[[str], None]


@dataclass(frozen=True)
class Locations:
    """Where provisioning reads and writes. ``root`` stands for ``/`` (tests, image work):
    the settings folder defaults to ``<root>/etc/kiosk`` and the state folder to
    ``<root>/var/lib/kiosk`` unless the settings already there name one."""

    source: Path
    etc: Path
    root: Path = Path("/")

    @property
    def config(self) -> Path:
        return self.etc / "kiosk.toml"

    @property
    def first_boot(self) -> Path:
        return self.etc / "first-boot"

    @property
    def default_state_dir(self) -> Path:
        return self.root / "var" / "lib" / "kiosk"


@dataclass(frozen=True)
class Outcome:
    kiosk_id: str
    done: tuple[Step, ...]  # by this run
    resumed: bool
    config: Path
    roster_pinned: bool


# -- files -------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes, mode: int, group: str | None = None) -> None:
    """Write ``data`` to ``path`` with ``mode`` (and ``group`` when root and it exists):
    a temporary file, fsynced, renamed into place; never a half-written file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        files.write_atomic(path, data, mode, group)
    except OSError as exc:
        raise ProvisionStateError(f"{path}: cannot write ({exc.strerror or exc})") from None


#: A provisioning file is a few hundred bytes; anything much larger is not one.
MAX_REQUEST_BYTES = 64 * 1024


def read_request(source: Path) -> ProvisionFile | None:
    """The checked provisioning file, or None when it is not there (any more)."""
    try:
        if not source.is_file() and source.exists():  # a pipe or a device would never end
            raise ProvisionFileError(
                f"{source}: not a provisioning file (a folder, a pipe or a device)"
            )
        with source.open("rb") as handle:
            data = handle.read(MAX_REQUEST_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProvisionFileError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_REQUEST_BYTES:
        raise ProvisionFileError(
            f"{source}: larger than {MAX_REQUEST_BYTES} bytes: not a provisioning file"
        )
    return parse_provision_file(data, str(source))


def read_journal(path: Path) -> Journal | None:
    try:
        return Journal.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProvisionStateError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValidationError:
        raise ProvisionStateError(
            f"{path}: not a provisioning journal; remove it to provision from the start"
        ) from None


def write_journal(path: Path, journal: Journal) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, journal.model_dump_json(indent=2).encode() + b"\n", 0o600)


def _with_state_dir(values: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    kiosk = values.get("kiosk")
    if isinstance(kiosk, dict) and "state_dir" in kiosk:
        return values
    return {
        **values,
        "kiosk": {**(kiosk if isinstance(kiosk, dict) else {}), "state_dir": str(state_dir)},
    }


# -- keys --------------------------------------------------------------------------------------


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _same_key(path: Path, key: Ed25519PrivateKey) -> bool:
    try:
        found = keyfiles.read_private_key(path, Ed25519PrivateKey)  # type: ignore[type-abstract]
    except SigningKeyError:  # missing, unreadable, too open or not a key: write it again
        return False
    return public_key_text(found) == public_key_text(key)


@dataclass(frozen=True)
class KioskKeys:
    sign: Ed25519PrivateKey
    public_key: str  # base64, as registered
    box_public_key: str  # base64, as registered
    made: bool  # a key file was created by this call

    def __repr__(self) -> str:  # never print a private key
        return f"KioskKeys({self.public_key})"


def ensure_keys(settings: Settings) -> KioskKeys:
    """The kiosk's keys, each made when missing and reused when there."""
    state_dir, keys_dir = settings.kiosk.state_dir, settings.keys_dir
    sign_path = state_dir / settings.sync.key_filename
    made = not (
        sign_path.exists() or keyfiles.credential_path(sign_path.name, keyfiles.SIGNING_CREDENTIAL)
    )
    made |= not ((keys_dir / BOX_FILE).exists() or keyfiles.credential_path(BOX_FILE))
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    sign = kiosk_key(state_dir, settings.sync.key_filename)
    copy = keys_dir / SIGN_FILE
    if keyfiles.credential_path(SIGN_FILE) is None and not _same_key(copy, sign):
        if copy.exists():
            log.warning("provision.key_copy_replaced", path=str(copy))
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(copy, _pem(sign), 0o600)
    box = keyfiles.load_or_create(keys_dir / BOX_FILE, X25519PrivateKey)  # type: ignore[type-abstract]
    device_keys(keys_dir)  # both files load as the runtime will load them
    box_text = base64.b64encode(raw_public(box.public_key())).decode("ascii")
    return KioskKeys(sign, public_key_text(sign), box_text, made)


# -- the cloud ---------------------------------------------------------------------------------


def _log_retry(state: RetryCallState) -> None:
    wait = state.next_action.sleep if state.next_action else 0.0
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "provision.retry", attempt=state.attempt_number, wait_s=round(wait, 1), error=str(error)
    )


def register(
    request: ProvisionFile,
    keys: KioskKeys,
    settings: Settings,
    retry_for_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Registration:
    """Spend the token to register the public keys; ``TokenRefusedError`` when the cloud
    refuses it, ``CloudUnavailableError`` when it stays unreachable for ``retry_for_s``."""
    from cloud_sync.client import CloudClient

    url = request.cloud_url.rstrip("/")
    body = json.dumps(
        {
            "token": request.token.get_secret_value(),
            "kiosk_id": request.kiosk_id,
            "public_key": keys.public_key,
            "box_public_key": keys.box_public_key,
            "site": request.site,
        }
    ).encode()

    retrying = Retrying(
        sleep=sleep,
        stop=stop_before_delay(retry_for_s),
        wait=wait_full_jitter(RETRY),
        retry=retry_if_exception_type(CloudUnavailableError),
        before_sleep=_log_retry,
        reraise=True,
    )
    started = time.monotonic()
    client = CloudClient(
        url,
        request.kiosk_id,
        keys.sign,
        timeout_s=settings.sync.timeout_s,
        gzip_min_bytes=1 << 30,  # /v1/provision takes plain JSON
        ca_file=settings.sync.ca_file,
    )
    try:
        response = retrying(client.request, "POST", PROVISION_PATH, body)
    except CloudUnavailableError as exc:
        attempts = retrying.statistics.get("attempt_number", 1)
        raise CloudUnavailableError(
            f"cannot register with the cloud: {exc}; gave up after {attempts} attempts in "
            f"{time.monotonic() - started:.0f} s (the keys are kept; the next run resumes)",
            exc.status,
        ) from None
    except (CloudAuthError, CloudRejectedError) as exc:
        explained = refusal(exc.status, str(exc), request.kiosk_id)
        if explained is not None:
            raise TokenRefusedError(explained, exc.status) from None
        raise CloudRejectedError(
            f"the cloud refused the registration ({exc}); is {url} the kiosk cloud API?",
            exc.status or 400,
        ) from None
    finally:
        client.close()
    try:
        answer = Registration.model_validate_json(response.content)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise CloudRejectedError(
            f"{url}{PROVISION_PATH}: the cloud's answer cannot be used ({where}: "
            f"{str(first['msg']).removeprefix('Value error, ')}); nothing was recorded; is "
            f"{url} the kiosk cloud API?",
            response.status_code,
        ) from None
    mine = (request.kiosk_id, keys.public_key, keys.box_public_key)
    if (answer.kiosk_id, answer.public_key, answer.box_public_key) != mine:
        raise CloudRejectedError(
            f"{url}{PROVISION_PATH}: the answer does not register this kiosk's keys; is {url} "
            "the kiosk cloud API?",
            response.status_code,
        )
    return answer


# -- the run -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One provisioning at a time (the first-boot service and a technician, say)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (state_dir / ".provision.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProvisionStateError(
                f"{state_dir}: another `kiosk provision` is running; wait for it"
            ) from None
        yield


def provision(
    where: Locations,
    retry_for_s: float = 120.0,
    say: Say = print,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Provision this kiosk from ``where.source``, resuming from the journal."""
    request = read_request(where.source)
    if request is not None:
        structlog.contextvars.bind_contextvars(kiosk_id=request.kiosk_id)
    base = read_toml(where.config) if where.config.exists() else {}
    base = _with_state_dir(base, where.default_state_dir)
    preview = render_config(base, request, where.default_state_dir) if request else base
    settings = check_config(preview, str(where.config))  # before anything is written
    journal_path = settings.kiosk.state_dir / JOURNAL_NAME
    todo: Plan = plan(request, read_journal(journal_path), str(where.source))
    run = _Run(where, request, settings, base, retry_for_s, say, sleep)
    journal, done = todo.journal, list[Step]()
    with _locked(settings.kiosk.state_dir) if todo.steps else contextlib.nullcontext():
        for step in todo.steps:
            journal = run.step(step, journal).record(step)
            write_journal(journal_path, journal)
            done.append(step)
    pinned = bool(journal.registration and journal.registration.roster_public_key)
    outcome = Outcome(journal.kiosk_id, tuple(done), todo.resumed, where.config, pinned)
    log.info(
        "provision.done",
        kiosk_id=outcome.kiosk_id,
        steps=[str(step) for step in done],
        resumed=outcome.resumed,
        roster_pinned=pinned,
    )
    return outcome


@dataclass(frozen=True)
class _Run:
    """The steps of one run; each returns the journal with what it learnt."""

    where: Locations
    request: ProvisionFile | None
    settings: Settings
    base: dict[str, Any]
    retry_for_s: float
    say: Say
    sleep: Callable[[float], None]

    def step(self, step: Step, journal: Journal) -> Journal:
        if step is Step.CLEANUP:
            return self.cleanup(journal)
        assert self.request is not None  # the plan asks for more than cleanup only with a file
        actions = {
            Step.KEYS: self.keys,
            Step.FIRST_BOOT: self.first_boot,
            Step.REGISTER: self.register,
            Step.CONFIG: self.config,
        }
        return actions[step](self.request, journal)

    def keys(self, request: ProvisionFile, journal: Journal) -> Journal:
        keys = ensure_keys(self.settings)
        state_dir = self.settings.kiosk.state_dir
        self.say(f"keys: {'created' if keys.made else 'reused'} in {state_dir}")
        update = {"public_key": keys.public_key, "box_public_key": keys.box_public_key}
        return journal.model_copy(update=update)

    def first_boot(self, request: ProvisionFile, journal: Journal) -> Journal:
        folder = self.where.first_boot
        files = first_boot_files(request)
        for item in files:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(folder / item.name, item.text.encode(), 0o600 if item.secret else 0o644)
        names = ", ".join(item.name for item in files)
        self.say(
            f"first-boot: wrote {names} in {folder}"
            if files
            else "first-boot: no Wi-Fi, SSH key or time zone asked"
        )
        return journal

    def register(self, request: ProvisionFile, journal: Journal) -> Journal:
        keys = ensure_keys(self.settings)
        if (keys.public_key, keys.box_public_key) != (journal.public_key, journal.box_public_key):
            raise ProvisionStateError(
                f"{self.settings.kiosk.state_dir}: the kiosk's keys changed after they were "
                f"made; remove {JOURNAL_NAME} there to provision from the start"
            )
        answer = register(request, keys, self.settings, self.retry_for_s, self.sleep)
        pinned = "roster key pinned" if answer.roster_public_key else "this cloud serves no roster"
        self.say(f"register: {request.kiosk_id} registered with {request.cloud_url} ({pinned})")
        return journal.model_copy(update={"registration": answer})

    def config(self, request: ProvisionFile, journal: Journal) -> Journal:
        path = self.where.config
        state_dir = self.settings.kiosk.state_dir
        values = render_config(self.base, request, state_dir, journal.registration)
        check_config(values, str(path))
        if path.exists() and read_toml(path) == values:
            self.say(f"config: {path} verified")
        else:
            write_atomic(path, tomli_w.dumps(values).encode(), 0o640, group=CONFIG_GROUP)
            self.say(f"config: wrote {path}")
        return journal

    def cleanup(self, journal: Journal) -> Journal:
        source = self.where.source
        try:
            source.unlink()
        except FileNotFoundError:
            self.say(f"cleanup: {source} is gone already")
            return journal
        except OSError as exc:
            raise ProvisionStateError(
                f"{source}: cannot remove it, and it holds the spent token ({exc.strerror or exc})"
            ) from None
        files.fsync_dir(source.parent)
        self.say(f"cleanup: removed {source} (the token is gone from the boot partition)")
        return journal
