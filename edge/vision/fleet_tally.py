"""The fleet evaluation's counts, rates, targets and the table ``kiosk faces eval
--protocol fleet`` prints (``edge.vision.fleet_eval`` runs the visits)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# the targets of issue 21, point 2
TARGET_HOME_AUTOMATIC = 0.80
TARGET_WRONG_PERSON = 0.001
TARGET_STRANGERS = 0.01

VISIT_KEYS = (
    "visits",
    "home_visits",
    "away_visits",
    "automatic_right",
    "automatic_right_home",
    "wrong_person",
    "wrong_person_after_claim",
    "sent_to_claim",
    "served_after_claim",
    "refused",
    "no_face",
    "strangers",
    "stranger_accepted",
    "stranger_sent_to_claim",
    "stranger_with_code_accepted",
    # home visits not decided automatically, by what held them (a policy gate may hold a
    # visit with others: ``held_*`` can add up to more than the visits they held)
    "home_no_face",
    "home_wrong_person",
    "home_not_in_set",
    "home_other_nearest",
    "home_roster_check",
    "home_held_score",
    "home_held_distance",
    "home_held_gap",
    "home_held_lookalike",
    "home_held_size",
)
HELD = ("score", "distance", "gap", "lookalike", "size")


def empty() -> dict[str, Any]:
    return dict.fromkeys(VISIT_KEYS, 0)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def with_rates(c: dict[str, Any]) -> dict[str, Any]:
    served = c["automatic_right"] + c["served_after_claim"]
    return {
        **c,
        "home_automatic_rate": _rate(c["automatic_right_home"], c["home_visits"]),
        "automatic_rate": _rate(c["automatic_right"], c["visits"]),
        "wrong_person_rate": _rate(c["wrong_person"], c["visits"]),
        "served_rate": _rate(served, c["visits"]),
        "stranger_accept_rate": _rate(c["stranger_accepted"], c["strangers"]),
    }


def targets(c: dict[str, Any]) -> dict[str, Any]:
    """The three targets of issue 21 on pooled counts: the figure, the limit, met or not."""
    rows = {
        "home_automatic": (c["home_automatic_rate"], TARGET_HOME_AUTOMATIC, True),
        "wrong_person": (c["wrong_person_rate"], TARGET_WRONG_PERSON, False),
        "stranger_accepted": (c["stranger_accept_rate"], TARGET_STRANGERS, False),
    }
    return {
        name: {
            "value": value,
            "limit": limit,
            "met": value is not None and (value >= limit if at_least else value <= limit),
        }
        for name, (value, limit, at_least) in rows.items()
    }


def pool(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return with_rates({key: sum(p[key] for p in parts) for key in VISIT_KEYS})


def summary(report: dict[str, Any]) -> list[str]:
    """The text table ``kiosk faces eval --protocol fleet`` prints."""
    p = report["protocol"]
    lines = [
        f"fleet, half {p['half']} scored (split seed {p['split_seed']}, points fitted on half "
        f"{p['fitted_on']}), seeds {p['seeds'][0]}..{p['seeds'][-1]}: home share "
        f"{p['home_share']}, declared homes {p['declared_homes']}, set size "
        f"{p['auto_set_size']} (automatic up to {p['automatic_limit']} riders), sets: {p['sets']}",
        "fleet    policy        visits  auto  home_auto  wrong  claim  served  refused  "
        "strangers  accepted(who)  +code  served_rate",
    ]
    for f in report["fleets"]:
        if "skipped" in f:
            lines.append(f"{f['fleet']:<8} skipped: {f['skipped']}")
            continue
        for name in ("sets", "whole_roster"):
            c = f["pooled"][name]
            label = name if name == "whole_roster" or f["sets_used"] else "sets(off)"
            lines.append(
                f"{f['fleet']:<8} {label:<12} {c['visits']:>7} {c['automatic_right']:>5} "
                f"{_pct(c['home_automatic_rate']):>10} {c['wrong_person']:>6} "
                f"{c['sent_to_claim']:>6} {c['served_after_claim']:>7} {c['refused']:>8} "
                f"{c['strangers']:>10} {_taken(c):>13} "
                f"{c['stranger_with_code_accepted']:>6} {_pct(c['served_rate']):>12}"
            )
        lines.append(f"{'':<8} {_held_line(f['pooled']['sets'])}")
        met = f["targets"]["sets"]
        lines.append(
            f"{'':<8} targets (sets): "
            + ", ".join(
                f"{k} {_pct(v['value'])} {'met' if v['met'] else 'NOT met'}" for k, v in met.items()
            )
        )
    return lines


def _held_line(c: dict[str, Any]) -> str:
    """Why home visits were not decided automatically (sets)."""
    missed = c["home_visits"] - c["automatic_right_home"]
    parts = [
        f"no face {c['home_no_face']}",
        f"taken for another rider {c['home_wrong_person']}",
        f"not in the set {c['home_not_in_set']}",
        f"another rider nearest {c['home_other_nearest']}",
        f"roster check {c['home_roster_check']}",
        *(f"{gate} {c[f'home_held_{gate}']}" for gate in HELD if c[f"home_held_{gate}"]),
    ]
    return f"home visits not automatic (sets): {missed}: " + ", ".join(parts)


def _taken(c: dict[str, Any]) -> str:
    """Walk-ups accepted, and how many different strangers made them."""
    return f"{c['stranger_accepted']} ({c['strangers_taken']}/{c['stranger_people']})"


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"
