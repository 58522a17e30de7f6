"""``kiosk demo``: the whole appliance on one machine, walked through a short scenario.

Every part is the real one, composed as on a kiosk: the cloud API on loopback with SQLite
(``edge.demo.cloud``), the board simulator on a pty driven by the real serial driver, the
kiosk runtime of ``kiosk run`` (face pipeline, rental flow, slot inventory, outbox, rider
page), and the sync daemon of ``kiosk sync run`` pushing events and pulling the roster.
Only two things stand in for the physical world: a camera that shows whichever photo the
scenario puts in front of it (``ScriptedCamera``), and the simulator's hand that pushes a
powerbank back into a slot.

One round of the scenario:

1. **a rental**: the operator has added the rider in the cloud; the kiosk pulled the
   roster; the rider looks at the camera, is recognised, takes a powerbank, and the
   ``rental.started`` event reaches the cloud;
2. **a return at another slot**: the powerbank goes into a different empty slot, and the
   cloud closes the rental;
3. **an unknown face**: with ``--stranger PHOTO`` a person who is not enrolled looks at the
   camera; otherwise the operator deletes the rider in the cloud, the kiosk drops them at
   its next roster pull, and the same face is refused as unknown.

Each step waits for what a person would see (the rider screen, the cloud's records) and
fails with a clear message when it does not happen in time. The state lives in
``<state-dir>/appliance`` and starts fresh on every run.
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from cloud_sync.errors import InputError
from edge.demo.appliance import Appliance, Rider, Say, ScreenWatch, appliance
from edge.demo.samples import write_sample_set
from edge.enrol import EnrolReport, enrol_folder
from edge.errors import EdgeError
from edge.settings import Settings
from models.images import read_image

log = structlog.get_logger("edge.demo")

STEP_TIMEOUT_S = 40.0


class DemoError(EdgeError):
    """A step of the scenario did not happen as it should (the message says which)."""


@dataclass
class DemoSummary:
    rounds: int = 0
    rentals: int = 0
    returns: int = 0
    refused: int = 0
    seconds: float = 0.0
    cloud_events: int = 0
    state_dir: Path | None = None


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = STEP_TIMEOUT_S) -> Any:
    """Poll ``check`` until it returns something true; ``DemoError`` naming ``what`` if not."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.1)


def _display_name(person_id: str) -> str:
    return " ".join(part.capitalize() for part in person_id.replace("_", "-").split("-") if part)


def enrol_riders(report: EnrolReport) -> list[Rider]:
    """The riders the demo adds in the cloud, each with the photo they later show."""
    riders = []
    for person_id in report.people:
        accepted = report.accepted.get(person_id, [])
        if not accepted:
            continue
        photo = accepted[0].image  # a photo that was enrolled, not one refused
        templates = [vector for person, vector in report.templates if person == person_id]
        riders.append(Rider(person_id, _display_name(person_id), templates, photo))
    return riders


def _screen_is(watch: ScreenWatch, mark: int, *keys: str) -> dict[str, Any] | None:
    return next((s for s in watch.since(mark) if s.get("key") in keys), None)


FAILURES = ("not_recognised", "not_eligible", "no_powerbank", "eject_failed", "not_taken")


def rental_step(
    app: Appliance, rider: Rider, say: Say, title: str | None = None
) -> tuple[str, int, str]:
    """The rider looks at the camera and takes a powerbank; returns (rental, slot, powerbank)."""
    say(title or f"step 1: {rider.name} looks at the camera to rent a powerbank")
    seen_before = len(app.cloud_events("rental.started"))
    mark = app.screen.mark()
    app.camera.show(read_image(rider.photo))
    shown = wait_for(
        "the rider screen offering a powerbank",
        lambda: _screen_is(app.screen, mark, "take", *FAILURES),
    )
    app.camera.show(None)  # the rider steps back to take it
    if shown["key"] != "take":
        raise DemoError(f"the rental did not go through: the screen said {shown['key']}")
    wait_for("the rider taking the powerbank", lambda: _screen_is(app.screen, mark, "enjoy"))
    app.daemon.wake()
    started = wait_for(
        "rental.started reaching the cloud",
        lambda: app.cloud_events("rental.started")[seen_before:],
    )[-1]["payload"]
    say(
        f"  cloud   rental.started: rental {started['rental_id']}, slot {started['slot']}, "
        f"powerbank {started['powerbank_id']}, rider {started['person_id']}"
    )
    return str(started["rental_id"]), int(started["slot"]), str(started["powerbank_id"])


def return_step(app: Appliance, rental: str, slot: int, powerbank: str, say: Say) -> None:
    """The powerbank goes back into another empty slot; the cloud closes the rental."""
    empty = [
        s.number
        for s in app.sim.cabinet.slots
        if not s.powerbank_id and s.number != slot and not s.disabled
    ]
    if not empty:
        raise DemoError("no empty slot to return the powerbank into")
    target = empty[-1]
    say(f"step 2: the powerbank {powerbank} comes back, into slot {target} (it left from {slot})")
    mark = app.screen.mark()
    app.sim.act("return", slot=target, powerbank_id=powerbank, value=35)
    wait_for(
        "the rider screen thanking for the return", lambda: _screen_is(app.screen, mark, "returned")
    )
    app.daemon.wake()

    def closed() -> dict[str, Any] | None:
        return next((r for r in app.cloud.rentals("closed") if r["rental_id"] == rental), None)

    done = wait_for("the cloud closing the rental", closed)
    say(f"  cloud   rental {rental} closed: returned at {done['return_kiosk_id']}")


def unknown_step(app: Appliance, rider: Rider, stranger: Path | None, say: Say) -> bool:
    """A face the kiosk does not know is refused; returns True if the rider was deleted."""
    deleted = False
    if stranger is not None:
        say(f"step 3: somebody who is not enrolled looks at the camera ({stranger.name})")
        picture = read_image(stranger)
    else:
        version = app.cloud.delete_rider(rider.person_id)
        say(
            f"step 3: the operator deletes {rider.person_id} in the cloud (roster version "
            f"{version}); the kiosk drops them at its next pull, then they look at the camera"
        )
        app.daemon.wake()
        _await_roster(app, version, "the kiosk applying the deletion")
        say(f"  kiosk   roster version {app.roster_version()}: {rider.person_id} is gone")
        deleted = True
        picture = read_image(rider.photo)
    seen_before = len(app.cloud_events("face.unrecognised"))
    mark = app.screen.mark()
    app.camera.show(picture)
    shown = wait_for(
        "the rider screen refusing the face",
        lambda: _screen_is(app.screen, mark, "not_recognised", "take", "ejecting"),
    )
    app.camera.show(None)
    if shown["key"] != "not_recognised":
        raise DemoError(f"an unknown face was not refused: the screen said {shown['key']}")
    app.daemon.wake()
    wait_for(
        "face.unrecognised reaching the cloud",
        lambda: app.cloud_events("face.unrecognised")[seen_before:],
    )
    say("  cloud   face.unrecognised: a count and a reason, no picture and no template")
    return deleted


def pause(seconds: float, say: Say) -> None:
    """Wait between two steps (``--pause``), saying so: ``seconds``, or less when a line is
    typed (Enter) on the standard input. Without one (closed, or not a stream) it waits."""
    if seconds <= 0:
        return
    say(f"  (pause {seconds:g} s, Enter goes on)")
    deadline = time.monotonic() + seconds
    if not _enter_within(seconds):
        time.sleep(max(0.0, deadline - time.monotonic()))


def _enter_within(seconds: float) -> bool:
    """Whether a line is typed on the standard input within ``seconds``; False as soon as
    nothing more can be typed (no input, its end, or one ``select`` cannot watch)."""
    try:
        stdin = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            ready, _, _ = select.select([stdin], [], [], left)
            typed = os.read(stdin, 4096) if ready else b""
        except OSError:
            return False
        if not typed:  # the time is up, or the input ended
            return False
        if b"\n" in typed:
            return True
    return False


def _await_roster(app: Appliance, version: int, what: str) -> None:
    wait_for(what, lambda: app.roster_version() >= version)


def _idle(app: Appliance) -> None:
    wait_for("the rider screen going back to idle", lambda: app.screen_key() == "idle")


def prepare(settings: Settings, enroll: Path | None, say: Say) -> tuple[Path, list[Rider], str]:
    """A fresh ``<state-dir>/appliance``, and the riders the operator will add (templates
    made here from ``enroll``, or the bundled sample rider) with the encoder model's name."""
    base = settings.kiosk.state_dir
    root = base / "appliance"
    shutil.rmtree(root, ignore_errors=True)
    if enroll is None:
        enroll = write_sample_set(base / "samples").enroll_dir
    if not enroll.is_dir():
        raise InputError(f"--enroll {enroll}: no such folder")

    from edge.vision import setup

    engine = setup.enrol_engine(settings.vision)
    try:
        report = enrol_folder(engine, enroll, settings.vision.max_image_pixels)
    except InputError as exc:
        raise InputError(f"--enroll {exc}") from None
    for refusal in report.refused:
        say(f"enrol   {refusal.image.name}: refused, {refusal.reason}")
    riders = enrol_riders(report)
    if not riders:
        raise InputError(f"--enroll {enroll}: no rider could be enrolled (every photo was refused)")
    return root, riders, engine.model_version


def run_demo(
    settings: Settings,
    say: Say,
    enroll: Path | None = None,
    stranger: Path | None = None,
    rounds: int = 1,
    pause_s: float = 0.0,
    any_port: bool = True,
) -> DemoSummary:
    """Run ``rounds`` rounds of the scenario (0: until interrupted), waiting ``pause_s``
    seconds between steps so that a person can follow them on the rider page and the CLI.
    ``any_port``: see ``edge.demo.appliance.appliance``."""
    started = time.monotonic()
    if stranger is not None and not stranger.is_file():
        raise InputError(f"--stranger {stranger}: no such file")
    root, riders, model = prepare(settings, enroll, say)
    summary = DemoSummary(state_dir=root)
    with ExitStack() as stack:
        app = stack.enter_context(appliance(settings, root, riders, model, say, any_port=any_port))
        rider = riders[0]
        round_no = 0
        while rounds == 0 or round_no < rounds:
            round_no += 1
            if round_no > 1:
                say(f"round {round_no}")
                version = app.cloud.add_rider(
                    rider.person_id, rider.name, rider.templates, app.model
                )
                app.daemon.wake()
                _await_roster(app, version, "the kiosk pulling the rider again")
            _idle(app)
            pause(pause_s, say)
            rental, slot, powerbank = rental_step(app, rider, say)
            summary.rentals += 1
            pause(pause_s, say)
            return_step(app, rental, slot, powerbank, say)
            summary.returns += 1
            _idle(app)
            pause(pause_s, say)
            unknown_step(app, rider, stranger, say)
            summary.refused += 1
            summary.rounds = round_no
        summary.cloud_events = len(app.cloud.events(app.kiosk_id))
    summary.seconds = time.monotonic() - started
    return summary
