"""``kiosk demo --fleet``: two kiosks and one cloud on this machine, run as a person runs it.

A real process: the cloud API with compressed rental times, two board simulators, two
kiosk runtimes with the real face model, two sync daemons. Afterwards the test reads what
an operator would check: the cloud's rentals and events, and each kiosk's outbox and roster.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from tests.helpers import run_cli


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_the_fleet_demo_counts_rentals_across_kiosks_and_blocks_a_lost_powerbank(
    tmp_path: Path,
) -> None:
    result = run_cli("demo", "--fleet", "--state-dir", str(tmp_path), timeout=240)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "rider.refused at kiosk-b: reason open_rental" in out
    assert "closed: returned at kiosk-b" in out
    assert re.search(r"rental \w+ is overdue", out) and re.search(r"rental \w+ is lost", out)
    assert "rider.refused at kiosk-a: reason lost" in out
    assert re.search(r"done in [\d.]+ s: 2 kiosks, 2 rental\(s\), 1 return\(s\), 2 refusal", out)

    root = tmp_path / "appliance"
    cloud = root / "cloud" / "cloud.sqlite"
    rentals = rows(
        cloud, "SELECT kiosk_id, status, return_kiosk_id FROM rentals ORDER BY started_at"
    )
    assert rentals == [("kiosk-a", "closed", "kiosk-b"), ("kiosk-b", "lost", None)]
    refused = [
        (kiosk, json.loads(str(payload))["reason"])
        for kiosk, payload in rows(
            cloud,
            "SELECT kiosk_id, payload FROM events WHERE type = 'rider.refused' ORDER BY received_at",
        )
    ]
    assert refused == [("kiosk-b", "open_rental"), ("kiosk-a", "lost")]
    # no picture and no template in any refusal
    assert all(set(json.loads(str(p))) <= {"person_id", "reason", "count"} for (p,) in rows(
        cloud, "SELECT payload FROM events WHERE type = 'rider.refused'"))  # fmt: skip
    for kiosk in ("kiosk-a", "kiosk-b"):
        outbox = rows(root / kiosk / "outbox.sqlite", "SELECT id, state FROM events")
        stored = {
            str(i) for (i,) in rows(cloud, f"SELECT id FROM events WHERE kiosk_id = '{kiosk}'")
        }
        # every event each kiosk recorded reached the cloud (the last status may still wait)
        assert {str(i) for i, state in outbox if state == "sent"} <= stored
        assert len(stored) >= len(outbox) - 2
    # kiosk-a holds the rider's fleet state: one powerbank out, and it is lost
    fleet = rows(
        root / "kiosk-a" / "roster.sqlite", "SELECT person_id, overdue, lost FROM rider_fleet"
    )
    assert fleet == [("eileen-collins", 0, 1)]
