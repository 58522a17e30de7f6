"""Powerbank custody from events in any order: the real cloud API (SQLite and PostgreSQL),
signed batches over HTTP, read back through the admin API and ``kiosk-cloud``."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ulid import ULID

from tests.helpers import run_cli
from tests.integration.sync.cloudkit import Cloud, start_cloud

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


@dataclass(frozen=True)
class Sent:
    kiosk_id: str
    body: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.body["id"])


def ev(kiosk_id: str, seq: int, minute: int, kind: str, **payload: Any) -> Sent:
    at = T0 + timedelta(minutes=minute)
    body = {
        "id": str(ULID.from_datetime(at)),
        "kiosk_id": kiosk_id,
        "seq": seq,
        "type": kind,
        "occurred_at": at.isoformat(),
        "schema": 1,
        "payload": payload,
    }
    return Sent(kiosk_id, body)


def rent(kiosk: str, seq: int, minute: int, rental: str, person: str, pb: str) -> Sent:
    return ev(
        kiosk,
        seq,
        minute,
        "rental.started",
        rental_id=rental,
        person_id=person,
        slot=1,
        powerbank_id=pb,
        request_id=f"q-{rental}",
    )


def give_back(kiosk: str, seq: int, minute: int, pb: str, slot: int) -> Sent:
    return ev(kiosk, seq, minute, "rental.returned", slot=slot, powerbank_id=pb)


class Fleet:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.keys: dict[str, Ed25519PrivateKey] = {}

    def register(self) -> None:
        for kiosk in ("kiosk-a", "kiosk-b", "kiosk-c"):
            self.keys[kiosk] = self.keys.get(kiosk) or Ed25519PrivateKey.generate()
            self.cloud.register(kiosk, self.keys[kiosk])

    def send(self, *events: Sent) -> None:
        kiosk = events[0].kiosk_id
        body = {"kiosk_id": kiosk, "batch_id": str(ULID()), "events": [e.body for e in events]}
        answer = self.cloud.signed(kiosk, self.keys[kiosk], json.dumps(body).encode())
        assert answer.status_code == 200, answer.text
        assert answer.json()["rejected"] == []

    def powerbanks(self, state: str = "all") -> list[dict[str, Any]]:
        answer = self.cloud.admin("GET", "/v1/admin/powerbanks", params={"state": state})
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()
        return found

    def rentals(self) -> dict[str, dict[str, Any]]:
        params = {"status": "all", "limit": 1000}
        rows = self.cloud.admin("GET", "/v1/admin/rentals", params=params).json()
        return {row["rental_id"]: row for row in rows}


@pytest.fixture
def fleet(cloud: Cloud) -> Fleet:
    made = Fleet(cloud)
    made.register()
    return made


def outcome(fleet: Fleet) -> tuple[Any, ...]:
    """Everything an operator sees of the scenario, without times of the cloud's own."""
    banks = [{k: v for k, v in pb.items() if k != "flags"} for pb in fleet.powerbanks()]
    flags = sorted(
        (f["flag_id"], f["kind"], tuple(f["event_ids"]))
        for pb in fleet.powerbanks("flagged")
        for f in pb["flags"]
    )
    rentals = sorted(
        (r["rental_id"], r["status"], r["return_kiosk_id"], r["review"])
        for r in fleet.rentals().values()
    )
    returns = fleet.cloud.admin("GET", "/v1/admin/returns", params={"limit": 1000}).json()
    links = sorted((r["event_id"], r["rental_id"], r["flag"]) for r in returns)
    return banks, flags, rentals, links


def scenario(tag: str = "", first_seq: int = 1) -> tuple[Sent, ...]:
    """Rent at A, rent again at B without a return, return at C, then A reports the same
    powerbank docked too; ``tag`` names a copy of its own (powerbank, rentals, events)."""
    pb, n = f"pb-1{tag}", first_seq
    return (
        rent("kiosk-a", n, 0, f"r-a{tag}", "p1", pb),
        rent("kiosk-b", n, 10, f"r-b{tag}", "p2", pb),
        give_back("kiosk-c", n, 20, pb, 3),
        give_back("kiosk-a", n + 1, 30, pb, 4),
    )


SCENARIO = scenario()


def test_every_arrival_order_gives_the_same_custody_and_flags(fleet: Fleet) -> None:
    seen: dict[str, list[tuple[int, ...]]] = {}
    found: dict[str, tuple[Any, ...]] = {}
    orders = list(itertools.permutations(range(len(SCENARIO))))
    copies = [scenario(f"-{n}", first_seq=1 + 2 * n) for n in range(len(orders))]
    for events, order in zip(copies, orders, strict=True):  # a copy each: no emptying
        for index in order:
            fleet.send(events[index])
    everything = outcome(fleet)
    for number, order in enumerate(orders):
        result = only(everything, copies[number], f"-{number}")
        found[json.dumps(result)] = result
        seen.setdefault(json.dumps(result), []).append(order)
    assert len(seen) == 1, f"{len(seen)} different outcomes: {list(seen.values())}"
    (banks, flags, rentals, links) = next(iter(found.values()))
    rent_a, rent_b, back_c, back_a = ("rent_a", "rent_b", "back_c", "back_a")
    assert rentals == [
        ("r-a", "returned_unrecorded", "kiosk-b", "returned_unrecorded"),
        ("r-b", "closed", "kiosk-c", None),
    ]
    assert flags == sorted(
        [
            ("returned_unrecorded", (rent_a, rent_b)),
            ("conflicting_custody", (back_a, back_c)),
        ]
    )
    assert banks == [("docked", "kiosk-a", 4, back_a)]
    assert links == sorted([(back_c, "r-b", None), (back_a, "r-b", "duplicate")])


def only(everything: tuple[Any, ...], events: tuple[Sent, ...], tag: str) -> tuple[Any, ...]:
    """One copy's outcome, its ids put back to the scenario's names (so copies compare)."""
    pb = f"pb-1{tag}"
    names = dict(zip((e.id for e in events), ("rent_a", "rent_b", "back_c", "back_a"), strict=True))
    banks, flags, rentals, links = everything
    return (
        [
            (b["state"], b["kiosk_id"], b["slot"], names.get(b["event_id"]))
            for b in banks
            if b["powerbank_id"] == pb
        ],
        sorted(
            (kind, tuple(sorted(names[e] for e in events)))
            for _, kind, events in flags
            if events[0] in names
        ),
        [(rental.removesuffix(tag), *rest) for rental, *rest in rentals if rental.endswith(tag)],
        sorted(
            (names[event], rental.removesuffix(tag) if rental else None, flag)
            for event, rental, flag in links
            if event in names
        ),
    )


def test_sending_the_same_events_again_makes_no_second_flag(fleet: Fleet) -> None:
    for event in SCENARIO:
        fleet.send(event)
    before = outcome(fleet)
    for event in SCENARIO:
        fleet.send(event)  # duplicates: stored once, nothing moves
    assert outcome(fleet) == before
    assert len(before[1]) == 2


def test_an_older_event_arriving_late_never_moves_a_newer_position(fleet: Fleet) -> None:
    newer = give_back("kiosk-b", 1, 50, "pb-7", 2)
    fleet.send(newer)
    fleet.send(rent("kiosk-a", 1, 5, "r-7", "p7", "pb-7"))  # long before: already back
    (bank,) = fleet.powerbanks()
    assert (bank["state"], bank["kiosk_id"], bank["slot"]) == ("docked", "kiosk-b", 2)
    assert fleet.rentals()["r-7"]["status"] == "closed"


def test_a_rider_sees_their_rentals_out_and_the_renting_kiosk_hears_of_the_unrecorded_return(
    fleet: Fleet,
) -> None:
    fleet.send(SCENARIO[0])
    view = fleet.cloud.admin("GET", "/v1/admin/riders/p1").json()
    assert (view["rentals"]["open"], view["rentals"]["overdue"], view["rentals"]["lost"]) == (
        1,
        0,
        0,
    )
    assert [r["rental_id"] for r in view["rentals"]["rentals"]] == ["r-a"]
    assert view["rider"] is None  # not in the roster: the rentals are still shown
    (bank,) = fleet.powerbanks("rented")
    assert (bank["person_id"], bank["rental_kiosk_id"], bank["rental_id"]) == (
        "p1",
        "kiosk-a",
        "r-a",
    )

    fleet.send(SCENARIO[1])

    assert fleet.cloud.admin("GET", "/v1/admin/riders/p1").status_code == 404
    assert fleet.cloud.admin("GET", "/v1/admin/riders/p2").json()["rentals"]["open"] == 1
    closed = fleet.cloud.signed(
        "kiosk-a", fleet.keys["kiosk-a"], b"", path="/v1/rentals:closed?since=0", method="GET"
    ).json()
    assert [(r["rental_id"], r["return_kiosk_id"]) for r in closed["rentals"]] == [
        ("r-a", "kiosk-b")
    ]


def test_maintenance_follows_slot_service_kiosk_maintenance_and_ejects(fleet: Fleet) -> None:
    fleet.send(give_back("kiosk-a", 1, 0, "pb-s", 2), give_back("kiosk-a", 2, 0, "pb-k", 5))
    service = {"slot": 2, "operator": "tech", "board_confirmed": True}
    fleet.send(ev("kiosk-a", 3, 5, "slot.service", enabled=False, **service))
    states = {b["powerbank_id"]: b["state"] for b in fleet.powerbanks()}
    assert states == {"pb-s": "maintenance", "pb-k": "docked"}
    fleet.send(ev("kiosk-a", 4, 6, "slot.service", enabled=True, **service))
    fleet.send(ev("kiosk-a", 5, 7, "kiosk.maintenance", on=True, operator="tech"))
    assert {b["state"] for b in fleet.powerbanks()} == {"maintenance"}
    fleet.send(ev("kiosk-a", 6, 8, "kiosk.maintenance", on=False, operator="tech"))
    fleet.send(
        ev(
            "kiosk-a",
            7,
            9,
            "slot.ejected",
            slot=5,
            powerbank_id="pb-k",
            operator="tech",
            reason="swap",
            outcome="taken",
        )
    )
    states = {b["powerbank_id"]: b["state"] for b in fleet.powerbanks()}
    assert states == {"pb-s": "docked", "pb-k": "maintenance"}


def test_events_for_unknown_powerbanks_and_empty_slots_are_recorded(fleet: Fleet) -> None:
    """Custody is learned from the events: nothing is refused, nothing is lost."""
    fleet.send(
        ev(
            "kiosk-c",
            1,
            0,
            "slot.service",
            slot=9,
            enabled=False,
            operator="t",
            board_confirmed=False,
        ),
        give_back("kiosk-c", 2, 1, "pb-never-seen", 9),
        ev(
            "kiosk-c",
            3,
            2,
            "slot.ejected",
            slot=4,
            powerbank_id="pb-other",
            operator="t",
            reason="stuck",
            outcome="jammed",
        ),
    )
    assert len(fleet.cloud.events("kiosk-c")) == 3
    states = {b["powerbank_id"]: (b["state"], b["slot"]) for b in fleet.powerbanks()}
    assert states == {"pb-never-seen": ("maintenance", 9), "pb-other": ("docked", 4)}


def test_the_powerbanks_command_names_the_events_behind_a_flag(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    cloud = start_cloud(url)
    try:
        fleet = Fleet(cloud)
        fleet.register()
        for event in SCENARIO[:2]:
            fleet.send(event)
    finally:
        cloud.stop()
    listed = run_cli(
        "powerbanks", "--state", "flagged", "--json", "--database-url", url, program="kiosk-cloud"
    )
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    (flag,) = json.loads(line)["flags"]
    assert flag["kind"] == "returned_unrecorded"
    assert flag["event_ids"] == sorted(e.id for e in SCENARIO[:2])
    table = run_cli("powerbanks", "--database-url", url, program="kiosk-cloud")
    assert "pb-1" in table.stdout and "rented" in table.stdout
    assert SCENARIO[0].id in table.stdout and SCENARIO[1].id in table.stdout
    unrecorded = run_cli(
        "rentals", "--state", "returned_unrecorded", "--database-url", url, program="kiosk-cloud"
    )
    row = json.loads(unrecorded.stdout)
    assert (row["rental_id"], row["review"]) == ("r-a", "returned_unrecorded")
    bad = run_cli("powerbanks", "--state", "stolen", "--database-url", url, program="kiosk-cloud")
    assert bad.returncode == 4 and "--state must be one of" in bad.stderr
