"""``kiosk faces eval --protocol fleet`` end to end on real dev photos (issue 21, point 2).

A small fleet: ten riders (two photos each: enrolment and visit) and four strangers (one
photo), operating points that decide automatically up to four riders only, so that the
roster is past the calibrated size and each kiosk decides among its automatic set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.vision.policy import load_operating_points
from tests.helpers import run_cli

RIDERS = [f"person_{n:02d}" for n in range(1, 11)]
STRANGERS = [f"person_{n:02d}" for n in range(11, 15)]


def _tree(dev: Path, dest: Path) -> Path:
    for person in RIDERS + STRANGERS:
        photos = sorted(p.name for p in (dev / person).iterdir())
        (dest / person).mkdir(parents=True)
        for name in photos[: 2 if person in RIDERS else 1]:
            (dest / person / name).symlink_to(dev / person / name)
    return dest


def _numbers(value: Any) -> list[list[float]]:
    """Every list of 128 numbers anywhere in ``value`` (a template would be one)."""
    if isinstance(value, dict):
        return [v for item in value.values() for v in _numbers(item)]
    if isinstance(value, list):
        if len(value) == 128 and all(isinstance(x, float) for x in value):
            return [value]
        return [v for item in value for v in _numbers(item)]
    return []


def test_a_small_fleet_decides_among_its_sets_and_the_counts_add_up(
    tmp_path: Path, dev_faces: Path
) -> None:
    tree = _tree(dev_faces, tmp_path / "tree")
    points = load_operating_points()
    points["identify"]["points"] = [{"people": 4, "threshold": 2.0}]  # automatic up to 4
    points_file = tmp_path / "points.json"
    points_file.write_text(json.dumps(points))
    out = tmp_path / "fleet.json"
    args = ["faces", "eval", str(tree), "--protocol", "fleet", "--points", str(points_file)]
    args += ["--encodings", str(tmp_path / "enc.npz"), "--auto-set-size", "3"]
    result = run_cli(*args, "--fleets", "all:2,50:2", "--fleet-seeds", "3", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["protocol"]["half"] == "B" and report["protocol"]["seeds"] == [0, 1, 2]
    fleet, too_big = report["fleets"]
    assert too_big == {"fleet": "50:2", "skipped": too_big["skipped"]}
    assert "the tree holds 10 riders" in too_big["skipped"]
    assert fleet["riders"] == 10 and fleet["sets_used"]
    scored, strangers = fleet["scored_riders"], fleet["strangers"]
    assert 0 < scored < 10 and strangers > 0
    for run in fleet["seeds"]:
        assert all(size <= 3 for size in run["set_sizes"])
        for name in ("sets", "whole_roster"):
            c = run[name]
            assert c["visits"] == scored and c["strangers"] == strangers * 2
            assert c["home_visits"] + c["away_visits"] == c["visits"]
            automatic_wrong = c["wrong_person"] - c["wrong_person_after_claim"]
            decided = c["automatic_right"] + automatic_wrong + c["sent_to_claim"]
            assert decided + c["refused"] == c["visits"]
            assert c["served_after_claim"] + c["wrong_person_after_claim"] <= c["sent_to_claim"]
            assert c["stranger_accepted"] + c["stranger_sent_to_claim"] <= c["strangers"]
        # past the calibrated size the whole roster decides nobody automatically
        assert run["whole_roster"]["automatic_right"] == 0
        # with sets, a face the set does not know is offered the claim step, never refused
        sets = run["sets"]
        assert sets["refused"] == sets["no_face"]
        assert sets["stranger_sent_to_claim"] + sets["stranger_accepted"] == strangers * 2
    pooled = fleet["pooled"]["sets"]
    assert pooled["visits"] == 3 * scored
    assert pooled["automatic_right"] == sum(r["sets"]["automatic_right"] for r in fleet["seeds"])
    # riders served by face or claim on this easy tree, nobody served as someone else
    assert pooled["wrong_person"] == 0 and pooled["stranger_with_code_accepted"] == 0
    assert pooled["automatic_right"] + pooled["served_after_claim"] >= pooled["visits"] - 3
    for c in fleet["pooled"].values():  # walk-ups repeat people: who was taken, counted once
        assert c["stranger_people"] == strangers
        assert min(c["stranger_accepted"], 1) <= c["strangers_taken"] <= c["stranger_accepted"]
        assert c["strangers_taken"] <= strangers
    assert "taken" not in fleet["seeds"][0]
    # every home visit not decided automatically is put down to what held it
    c = fleet["pooled"]["sets"]
    missed = c["home_visits"] - c["automatic_right_home"]
    outside = sum(
        c[f"home_{why}"]
        for why in ("no_face", "wrong_person", "not_in_set", "other_nearest", "roster_check")
    )
    by_gates = sum(c[f"home_held_{gate}"] for gate in ("score", "distance", "gap", "lookalike"))
    assert outside <= missed and missed - outside <= by_gates
    assert (by_gates == 0) == (missed == outside) and c["home_held_size"] == 0
    assert "home visits not automatic (sets)" in result.stdout
    assert set(fleet["targets"]["sets"]) == {"home_automatic", "wrong_person", "stranger_accepted"}
    assert _numbers(report) == []
    assert "fleet, half B scored" in result.stdout and "targets (sets)" in result.stdout
    bad = run_cli(*args, "--fleets", "800")
    assert bad.returncode == 4 and "RIDERS:KIOSKS" in bad.stderr

    # the ceiling: each kiosk's set is exactly its home riders
    oracle = tmp_path / "oracle.json"
    result = run_cli(*args, "--fleets", "all:4", "--oracle-sets", "--json", str(oracle))
    assert result.returncode == 0, result.stderr
    [ceiling] = json.loads(oracle.read_text())["fleets"]
    assert "--oracle-sets" in json.loads(oracle.read_text())["protocol"]["sets"]
    for run in ceiling["seeds"]:  # nobody is in a set but their home kiosk's
        assert run["home_riders_in_own_set"] == round(sum(run["set_sizes"]) / 10, 4)
        assert all(size <= 3 for size in run["set_sizes"])
    wrong = run_cli("faces", "eval", str(tree), "--oracle-sets")
    assert wrong.returncode == 4 and "--oracle-sets is for --protocol fleet" in wrong.stderr
