"""``kiosk demo --fleet``: two kiosks and one cloud on this machine, and the fleet's rules.

The same real parts as ``kiosk demo`` (``edge.demo.scenario``), twice over: kiosks
``kiosk-a`` and ``kiosk-b``, each with its own board simulator, runtime, rider page and sync
daemon, against one cloud API whose rental times are compressed (due after ``DUE_S``
seconds, lost ``LOST_AFTER_S`` seconds later, swept every ``SWEEP_S``). The rider:

1. rents at kiosk A; the rental reaches the cloud;
2. looks at kiosk B once B has pulled the rider's fleet state (one rental out, at A): B
   refuses them (a ``rider.refused`` with the reason ``open_rental`` reaches the cloud);
3. returns A's powerbank into a slot of kiosk B: the cloud closes A's rental;
4. rents at kiosk B and keeps the powerbank: the cloud marks the rental overdue, then lost;
5. looks at kiosk A once A has pulled that: refused (``lost``), blocked fleet-wide.

Each step waits for what a person would see and fails with a clear message otherwise.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from edge.demo.appliance import Appliance, Rider, Say, add_riders, start_kiosk
from edge.demo.cloud import local_cloud
from edge.demo.scenario import (
    DemoError,
    DemoSummary,
    _idle,
    _screen_is,
    pause,
    prepare,
    rental_step,
    wait_for,
)
from edge.settings import Settings
from models.images import read_image

DUE_S = 12.0
LOST_AFTER_S = 6.0
SWEEP_S = 0.5
KIOSKS = ("kiosk-a", "kiosk-b")


def _rental(app: Appliance, rental_id: str) -> dict[str, Any] | None:
    return next((r for r in app.cloud.rentals("all") if r["rental_id"] == rental_id), None)


def _in_state(app: Appliance, rental_id: str, state: str) -> dict[str, Any] | None:
    found = _rental(app, rental_id)
    return found if found is not None and found["status"] == state else None


def _heard(app: Appliance, what: str) -> None:
    """Wait until ``app``'s kiosk matches with the cloud's current roster version (fleet
    rows included): its daemon pulls every second."""
    version = app.cloud.roster_version()
    app.daemon.wake()
    wait_for(what, lambda: app.roster_version() >= version)


def refused_step(app: Appliance, rider: Rider, reason: str, say: Say) -> None:
    """The rider looks at ``app``'s camera and is refused for ``reason``."""
    _idle(app)
    seen_before = len(app.cloud_events("rider.refused"))
    mark = app.screen.mark()
    app.camera.show(read_image(rider.photo))
    shown = wait_for(
        f"{app.kiosk_id}'s screen answering the rider",
        lambda: _screen_is(app.screen, mark, "not_eligible", "take", "ejecting", "no_powerbank"),
    )
    app.camera.show(None)
    if shown["key"] != "not_eligible":
        raise DemoError(f"{app.kiosk_id} did not refuse the rider: the screen said {shown['key']}")
    app.daemon.wake()
    refused = wait_for(
        "rider.refused reaching the cloud",
        lambda: app.cloud_events("rider.refused")[seen_before:],
    )[-1]["payload"]
    if refused["reason"] != reason:
        raise DemoError(f"{app.kiosk_id} refused the rider for {refused['reason']}, not {reason}")
    say(f"  cloud   rider.refused at {app.kiosk_id}: reason {reason}, no picture, no template")


def return_at(app: Appliance, rental_id: str, powerbank: str, say: Say) -> None:
    """The powerbank goes back into an empty slot of ``app``'s kiosk; the cloud closes
    the rental, wherever it started."""
    empty = [s.number for s in app.sim.cabinet.slots if not s.powerbank_id and not s.disabled]
    if not empty:
        raise DemoError(f"no empty slot at {app.kiosk_id} to return the powerbank into")
    say(f"step 3: the powerbank {powerbank} comes back, into slot {empty[-1]} of {app.kiosk_id}")
    mark = app.screen.mark()
    app.sim.act("return", slot=empty[-1], powerbank_id=powerbank, value=35)
    wait_for(
        "the rider screen thanking for the return", lambda: _screen_is(app.screen, mark, "returned")
    )
    app.daemon.wake()
    done = wait_for("the cloud closing the rental", lambda: _in_state(app, rental_id, "closed"))
    say(f"  cloud   rental {rental_id} closed: returned at {done['return_kiosk_id']}")


def run_fleet_demo(
    settings: Settings, say: Say, enroll: Any = None, pause_s: float = 0.0
) -> DemoSummary:
    """Run the fleet scenario once (see the module docstring)."""
    started = time.monotonic()
    root, riders, model = prepare(settings, enroll, say)
    summary = DemoSummary(state_dir=root)
    rider = riders[0]
    with ExitStack() as stack:
        cloud = stack.enter_context(
            local_cloud(
                root / "cloud",
                rental_due_s=DUE_S,
                rental_lost_after_s=LOST_AFTER_S,
                sweep_interval_s=SWEEP_S,
            )
        )
        say(
            f"cloud   API on {cloud.url} (SQLite {cloud.database}); rentals due after "
            f"{DUE_S:g} s, lost {LOST_AFTER_S:g} s later (time compressed)"
        )
        add_riders(cloud, riders, model, say)
        # each kiosk's rider page on a free port, each cabinet with its own powerbanks
        free = settings.model_copy(update={"ui": settings.ui.model_copy(update={"port": 0})})
        a, b = (
            start_kiosk(stack, free, root / k, cloud, model, say, kiosk_id=k, label=k, seed=42 + n)
            for n, k in enumerate(KIOSKS)
        )

        _idle(a)
        rental, _, powerbank = rental_step(
            a, rider, say, f"step 1: at kiosk-a, {rider.name} looks at the camera to rent"
        )
        summary.rentals += 1
        pause(pause_s, say)

        _heard(b, "kiosk-b pulling the rider's rental at kiosk-a")
        say("step 2: kiosk-b knows of the rental at kiosk-a; the rider looks at kiosk-b")
        refused_step(b, rider, "open_rental", say)
        summary.refused += 1
        pause(pause_s, say)

        return_at(b, rental, powerbank, say)
        summary.returns += 1
        _heard(b, "kiosk-b pulling the closed rental")
        pause(pause_s, say)

        _idle(b)
        kept, _, _ = rental_step(
            b, rider, say, f"step 4: at kiosk-b, {rider.name} rents again, and keeps it"
        )
        summary.rentals += 1
        for state in ("overdue", "lost"):

            def marked(state: str = state) -> dict[str, Any] | None:
                return _in_state(b, kept, state)

            row = wait_for(
                f"the cloud marking the rental {state}", marked, timeout_s=DUE_S + LOST_AFTER_S + 20
            )
            say(f"  cloud   rental {kept} is {state} (due at {row.get('due_at')})")
        pause(pause_s, say)

        _heard(a, "kiosk-a pulling the lost powerbank")
        say("step 5: the rider, with a powerbank lost, looks at kiosk-a")
        refused_step(a, rider, "lost", say)
        summary.refused += 1
        summary.rounds = 1
        summary.cloud_events = sum(len(cloud.events(k)) for k in KIOSKS)
    summary.seconds = time.monotonic() - started
    return summary
