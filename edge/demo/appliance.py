"""The parts of ``kiosk demo``: the appliance composed on one machine, and its stand-ins.

``appliance()`` starts, in this order: the cloud API on loopback (``edge.demo.cloud``), with
the kiosk registered and the riders added by the operator; the board simulator on a pty;
the kiosk runtime of ``kiosk run`` built by ``edge.runtime.assemble`` from settings that point at
both, with the ``ScriptedCamera``; the sync daemon of ``kiosk sync run``; and the rider
page. Everything stops, in reverse order, when the block ends.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from cloud_sync.private_files import private_dir
from edge.demo.cloud import LocalCloud, local_cloud
from edge.demo.inspection import inspect_lines, write_demo_config
from edge.errors import EdgeError
from edge.settings import Settings
from edge.ui.server import ScreenHub, load_strings
from hardware.cameras import Frame
from models.images import Image

log = structlog.get_logger("edge.demo")

Say = Callable[[str], None]

SLOTS = 6
FILLED = 4


@dataclass
class Rider:
    """A rider the demo enrols: templates made here, and the photo they later show."""

    person_id: str
    name: str
    templates: list[npt.NDArray[np.float64]]
    photo: Path


class ScriptedCamera:
    """A camera that sees whatever photo the scenario holds up, or an empty scene."""

    def __init__(self, fps: float, size: tuple[int, int] = (640, 480)) -> None:
        width, height = size
        self._empty: Image = np.full((height, width, 3), 96, dtype=np.uint8)
        self._picture: Image | None = None
        self._period = 1.0 / fps
        #: When the first frame showing the current picture was captured (monotonic).
        self.first_frame_at: float | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def show(self, picture: Image | None) -> None:
        """Hold ``picture`` up to the camera (None: nobody there) from the next frame on."""
        with self._lock:
            self.first_frame_at = None
            self._picture = picture

    def frames(self) -> Iterator[Frame]:
        index = 0
        next_at = time.monotonic()
        while not self._closed.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._closed.wait(delay):
                break
            next_at += self._period
            with self._lock:
                picture = self._picture
                stamp = time.monotonic()
                if self.first_frame_at is None:
                    self.first_frame_at = stamp
            image = self._empty if picture is None else picture
            yield Frame(image=image, timestamp=stamp, index=index, source="demo")
            index += 1

    def close(self) -> None:
        self._closed.set()


class ScreenWatch:
    """Follows the rider screen, prints each change in the rider's words, keeps a history."""

    def __init__(self, hub: ScreenHub, language: str, say: Say) -> None:
        self._hub = hub
        self._strings = load_strings(language)
        self._say = say
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="demo-screen", daemon=True)

    def __enter__(self) -> ScreenWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def words(self, state: dict[str, Any]) -> str:
        text = self._strings.get(state.get("key", ""), {})
        title, body = (text.get("title", state.get("key", "")), text.get("body", ""))
        detail = state.get("detail")
        for group in ("hint", "refusal", "reason"):
            table = self._strings.get(group)
            if detail and isinstance(table, dict) and detail in table:
                body = table[detail]
        values = {"name": state.get("name") or "", "slot": state.get("slot") or ""}
        line = " / ".join(part for part in (title, body) if part)
        for key, value in values.items():
            line = line.replace("{" + key + "}", str(value))
        return line

    def _follow(self) -> None:
        last: tuple[Any, ...] | None = None
        while not self._stop.wait(0.05):
            state = self._hub.state
            shown = (state.get("key"), state.get("name"), state.get("slot"), state.get("detail"))
            if shown != last:
                last = shown
                with self._lock:
                    self.seen.append(state)
                self._say(f"  screen  {self.words(state)}")

    def mark(self) -> int:
        with self._lock:
            return len(self.seen)

    def since(self, mark: int) -> list[dict[str, Any]]:
        with self._lock:
            return self.seen[mark:]


@dataclass
class Appliance:
    """The running parts the scenario pokes at."""

    cloud: LocalCloud
    camera: ScriptedCamera
    screen: ScreenWatch
    sim: Any
    runtime: Any
    daemon: Any
    kiosk_id: str
    model: str
    after_seq: int = 0
    cloud_seen: list[dict[str, Any]] = field(default_factory=list)

    def cloud_events(self, kind: str, since: int = 0) -> list[dict[str, Any]]:
        fresh = self.cloud.events(self.kiosk_id)
        self.cloud_seen = fresh
        return [e for e in fresh[since:] if e.get("type") == kind]

    def roster_version(self) -> int:
        """The roster version the running kiosk matches against (not just the one on disk)."""
        return int(self.runtime.loaded_roster_version)

    def screen_key(self) -> str | None:
        key = self.runtime.hub.state.get("key")
        return str(key) if key else None


def demo_settings(
    settings: Settings,
    folder: Path,
    cloud: LocalCloud,
    board_url: str,
    kiosk_id: str | None = None,
) -> Settings:
    """The user's settings, pointed at the demo's own state (``folder``), board and cloud.

    Liveness is off: the demo's camera shows still photos, which a kiosk (rightly) refuses.
    The repeat guard is 5 s, so that the same rider may rent again in the next round.
    """
    data = settings.model_dump()
    data["kiosk"].update(state_dir=folder, mode="rental")
    if kiosk_id is not None:
        data["kiosk"].update(id=kiosk_id)
    data["board"].update(url=board_url, slots=SLOTS)
    data["sync"].update(cloud_url=cloud.url, interval_s=1.0, roster_interval_s=1.0)
    data["roster"].update(cloud_roster_key=cloud.roster_key)
    data["vision"]["liveness"].update(method="off")
    data["flow"].update(repeat_guard_s=5.0)  # so that the next round may rent again
    data["mqtt"].update(enabled=False)  # the demo runs no broker
    return Settings.model_validate(data)


def register(settings: Settings, cloud: LocalCloud) -> None:
    """Create the kiosk's keys and register their public halves, as provisioning would."""
    from cloud_sync.sealing import raw_public
    from cloud_sync.signing import kiosk_key, public_key_text
    from edge.vault.keys import device_keys

    signing = public_key_text(kiosk_key(settings.kiosk.state_dir, settings.sync.key_filename))
    box = device_keys(settings.keys_dir, create=True).box.public_key()
    cloud.register_kiosk(settings.kiosk.id, signing, base64.b64encode(raw_public(box)).decode())


def _thread(
    stack: ExitStack, target: Callable[[], None], name: str, stop: Callable[[], None]
) -> None:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()

    def halt() -> None:
        stop()
        thread.join(timeout=15)

    stack.callback(halt)


@contextmanager
def appliance(
    settings: Settings,
    root: Path,
    riders: Sequence[Rider],
    model: str,
    say: Say,
    any_port: bool = True,
) -> Iterator[Appliance]:
    """Every part of the appliance, running, until the block ends.

    The rider page listens on ``ui.port``; when that port is taken it moves to a free one
    if ``any_port``, and otherwise fails (``EdgeError``).
    """
    with ExitStack() as stack:
        cloud = stack.enter_context(local_cloud(root / "cloud"))
        say(f"cloud   API on {cloud.url} (SQLite {cloud.database})")
        add_riders(cloud, riders, model, say)
        yield start_kiosk(stack, settings, root / "kiosk", cloud, model, say, any_port=any_port)


def add_riders(cloud: LocalCloud, riders: Sequence[Rider], model: str, say: Say) -> int:
    """The operator adds each rider in the cloud; the roster version that holds them all."""
    version = 0
    for rider in riders:
        version = cloud.add_rider(rider.person_id, rider.name, rider.templates, model)
        say(
            f"cloud   operator added rider {rider.person_id} ({len(rider.templates)} "
            f"photo(s)); roster version {version}"
        )
    return version


def start_kiosk(
    stack: ExitStack,
    settings: Settings,
    folder: Path,
    cloud: LocalCloud,
    model: str,
    say: Say,
    *,
    kiosk_id: str | None = None,
    any_port: bool = True,
    label: str = "kiosk",
    seed: int = 42,
) -> Appliance:
    """One kiosk, in ``folder``, against ``cloud``: its board simulator, keys registered,
    roster pulled, runtime, rider page and sync daemon, all stopped when ``stack`` closes.
    ``label`` starts its printed lines (``kiosk``, or ``kiosk-a`` in a fleet)."""
    from cloud_sync.outbox import Outbox
    from edge.cli.sync_cmd import build_daemon, open_cloud_roster
    from edge.ops.wiring import start_ops
    from edge.runtime.assemble import assemble, rider_page
    from hardware.errors import BoardError
    from hardware.sim import BoardSimulator
    from hardware.sim_board import SimConfig

    sim = BoardSimulator(
        SimConfig(
            slots=SLOTS, filled=FILLED, charge_rate=40, eject_s=0.6, take_after_s=1.5, seed=seed
        )
    )
    sim.start()
    stack.callback(sim.stop)
    say(f"{label:<7} board simulator on {sim.path}: {SLOTS} slots, {FILLED} powerbanks docked")
    kiosk = demo_settings(settings, folder, cloud, sim.path, kiosk_id)
    private_dir(kiosk.kiosk.state_dir)
    register(kiosk, cloud)
    outbox = Outbox(kiosk.outbox_path, kiosk.kiosk.id, max_bytes=kiosk.outbox.max_bytes)
    stack.callback(outbox.close)
    daemon = build_daemon(kiosk, outbox, open_cloud_roster(kiosk))
    pulled = daemon.pull_roster()
    if pulled.error:
        raise EdgeError(f"the kiosk could not pull the demo's roster: {pulled.error}")
    say(f"{label:<7} pulled roster version {pulled.to_version}: riders sealed for this kiosk")
    camera = ScriptedCamera(kiosk.camera.fps)
    parts = assemble(kiosk, camera=camera)
    stack.callback(parts.board.close)
    try:
        parts.runtime.inventory.refresh(parts.board)
    except BoardError as exc:
        raise EdgeError(f"the simulated board did not answer: {exc}") from None
    # As in `kiosk run`: runtime.json for `kiosk status`, and /healthz and /metrics.
    ops = start_ops(kiosk, parts.runtime)
    stack.callback(ops.stop)
    try:
        url = stack.enter_context(rider_page(parts.hub, kiosk, parts.runtime))
    except EdgeError:
        if not any_port:
            raise
        fallback = kiosk.model_copy(update={"ui": kiosk.ui.model_copy(update={"port": 0})})
        url = stack.enter_context(rider_page(parts.hub, fallback, parts.runtime))
    say(f"{label:<7} rider page: {url} (open it in a browser to watch)")
    # one kiosk: <root>/kiosk.toml, as before; a fleet: each kiosk's in its own folder
    config_root = folder.parent if kiosk_id is None else folder
    for line in inspect_lines(write_demo_config(kiosk, config_root), url):
        say(line)
    screen = stack.enter_context(ScreenWatch(parts.hub, kiosk.ui.language, say))
    _thread(stack, parts.runtime.run, f"demo-{kiosk.kiosk.id}", parts.runtime.stop)
    _thread(stack, daemon.run, f"demo-sync-{kiosk.kiosk.id}", daemon.stop)
    return Appliance(cloud, camera, screen, sim, parts.runtime, daemon, kiosk.kiosk.id, model)
