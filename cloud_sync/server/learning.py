"""Learned templates: the cloud's rules for a kiosk's ``template.proposed``.

A kiosk proposes the fused live encoding of a visit it verified (``edge.runtime.learning``).
The cloud adds it to the rider's record only when every rule holds, so that a stranger who
got through once cannot make the rider's identity drift towards their own face:

1. the event says ``claim_verified``, or ``confident_match`` with the distance and margin
   of a very confident match (``CONFIDENT_DISTANCE``, ``CONFIDENT_MARGIN``);
2. the rider exists, is not flagged as a lookalike, and has enrolment templates of the
   roster's model (the template's model);
3. the sealed encoding opens under the roster data key, bound to this rider and this kiosk
   (``cloud_sync.template_seal``), and is an encoding: 128 finite values of a norm dlib
   gives (``NORM_RANGE``);
4. it lies within ``MAX_DRIFT`` of the rider's nearest *enrolment* template: learned
   templates never vouch for one another, so however many are added, each stays within
   ``MAX_DRIFT`` of what the operator enrolled;
5. at most ``PER_DAY`` accepted per rider in any 24 hours.

Accepted, the encoding becomes the rider's newest learned template; past ``MAX_LEARNED``
the oldest learned one is dropped. The record gets a new roster version (kiosks receive it
in their next delta) with the terms in force sealed in (``CloudRoster.amend``), and the
audit log gets a ``template.learned`` entry (actor ``kiosk:ID``). Every proposal, accepted
or refused, leaves one ``template_learning`` row (no template) with its reason; a refused
proposal is still an accepted event: nothing the kiosk sent is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import structlog

from cloud_sync.errors import IntegrityError, SigningKeyError
from cloud_sync.events import Event, TemplateProposed
from cloud_sync.roster_wire import ENCODING_SIZE, RiderRecord, Template
from cloud_sync.server.audit import Entry
from cloud_sync.server.db import Tx
from cloud_sync.server.migrations import utc_text
from cloud_sync.server.problems import Problem
from cloud_sync.server.roster import CloudRoster
from cloud_sync.template_seal import open_template

log = structlog.get_logger("cloud.learning")

MAX_LEARNED = 4
PER_DAY = 3
MAX_DRIFT = 0.45
CONFIDENT_DISTANCE = 0.40
CONFIDENT_MARGIN = 0.12
NORM_RANGE = (0.5, 2.0)

ACCEPTED = "accepted"
REFUSED = "refused"


class Refused(Exception):
    """A proposal the rules turn down; ``why`` is a short stable code."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class Outcome:
    event_id: str
    person_id: str
    outcome: str
    detail: str
    roster_version: int | None = None


def _encoding(roster: CloudRoster, event: Event, proposal: TemplateProposed) -> np.ndarray:
    if proposal.reason == "confident_match" and (
        proposal.distance > CONFIDENT_DISTANCE
        or proposal.margin is None
        or proposal.margin < CONFIDENT_MARGIN
    ):
        raise Refused("not_confident")
    if proposal.model != roster.model:
        raise Refused("wrong_model")
    try:
        key = roster.keys.data_key(None)
    except SigningKeyError:
        raise Refused("stale_key") from None
    if proposal.key_id != key.key_id:
        raise Refused("stale_key")
    try:
        vector = open_template(
            key.material, key.key_id, proposal.person_id, event.kiosk_id, proposal.sealed
        )
    except IntegrityError:
        raise Refused("does_not_open") from None
    norm = float(np.linalg.norm(vector)) if np.all(np.isfinite(vector)) else float("nan")
    if vector.shape != (ENCODING_SIZE,) or not NORM_RANGE[0] <= norm <= NORM_RANGE[1]:
        raise Refused("not_an_encoding")
    return vector


def learned_record(record: RiderRecord, vector: np.ndarray, model: str) -> RiderRecord:
    """The record with ``vector`` as its newest learned template (rules 2 and 4; pure):
    ``Refused`` for a lookalike, a rider without enrolment templates of ``model``, or an
    encoding further than ``MAX_DRIFT`` from every enrolment template."""
    if record.lookalike:
        raise Refused("lookalike")
    enrolled = [t.vector for t in record.enrolled if t.model == model]
    if not enrolled:
        raise Refused("no_enrolment")
    drift = float(np.min(np.linalg.norm(np.asarray(enrolled) - vector, axis=1)))
    if drift > MAX_DRIFT:
        raise Refused("too_far")
    learned = list(record.templates[len(record.enrolled) :])
    learned = [*learned, Template(model, vector.astype(np.float32))][-MAX_LEARNED:]
    return replace(record, templates=(*record.enrolled, *learned), learned=len(learned))


def _within_rate(tx: Tx, person_id: str, now: datetime) -> None:
    since = utc_text(now - timedelta(days=1))
    today = tx.rows(
        "SELECT COUNT(*) FROM template_learning WHERE person_id = ? AND outcome = ? "
        "AND decided_at > ?",
        [person_id, ACCEPTED, since],
    )[0][0]
    if int(today) >= PER_DAY:
        raise Refused("over_rate")


def _row(tx: Tx, event: Event, outcome: Outcome, now: datetime) -> None:
    tx.run(
        "INSERT INTO template_learning (event_id, kiosk_id, person_id, reason, outcome, "
        "detail, roster_version, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (event_id) DO NOTHING",
        [
            event.id,
            event.kiosk_id,
            outcome.person_id,
            str(getattr(event.payload, "reason", "")),
            outcome.outcome,
            outcome.detail,
            outcome.roster_version,
            utc_text(now),
        ],
    )


def _decided(roster: CloudRoster, event_id: str) -> bool:
    with roster.db.transaction() as tx:
        return bool(tx.rows("SELECT 1 FROM template_learning WHERE event_id = ?", [event_id]))


def consider(roster: CloudRoster, event: Event, now: datetime | None = None) -> Outcome | None:
    """Decide one ``template.proposed`` event (once: None when it was decided before)."""
    proposal = event.payload
    if not isinstance(proposal, TemplateProposed) or _decided(roster, event.id):
        return None
    now = now or datetime.now(UTC)
    person = proposal.person_id
    try:
        vector = _encoding(roster, event, proposal)
        accepted: list[Outcome] = []

        def change(tx: Tx, record: RiderRecord) -> RiderRecord:
            new = learned_record(record, vector, proposal.model)
            _within_rate(tx, person, now)
            done = Outcome(event.id, person, ACCEPTED, f"learned={new.learned}")
            accepted.append(done)
            _row(tx, event, done, now)
            Entry(
                f"kiosk:{event.kiosk_id}",
                "template.learned",
                person,
                {"reason": proposal.reason, "learned": new.learned, "event_id": event.id},
            ).write(tx)
            return new

        version = roster.amend(person, change, now)
    except Refused as refused:
        outcome = Outcome(event.id, person, REFUSED, refused.why)
    except Problem as problem:  # the rider is not (or no longer) in the roster
        outcome = Outcome(event.id, person, REFUSED, problem.code)
    else:
        outcome = replace(accepted[0], roster_version=version)
        with roster.db.transaction() as tx:
            tx.run(
                "UPDATE template_learning SET roster_version = ? WHERE event_id = ?",
                [version, event.id],
            )
        log.info("template.learned", person_id=person, kiosk_id=event.kiosk_id, version=version)
        return outcome
    with roster.db.transaction() as tx:
        _row(tx, event, outcome, now)
    log.info("template.refused", person_id=person, kiosk_id=event.kiosk_id, why=outcome.detail)
    return outcome


def consider_all(roster: CloudRoster | None, events: list[Event]) -> list[Outcome]:
    """Decide the ``template.proposed`` events of an ingested batch (after it is stored).
    An error on one is logged and leaves it undecided, never fails the batch."""
    outcomes: list[Outcome] = []
    if roster is None:
        return outcomes
    for event in events:
        if event.type != "template.proposed":
            continue
        try:
            found = consider(roster, event)
        except Exception as exc:
            log.error("template.undecided", event_id=event.id, error=type(exc).__name__)
            continue
        if found is not None:
            outcomes.append(found)
    return outcomes


def outcomes(roster: CloudRoster, person_id: str) -> list[tuple[str, str, str, str]]:
    """A rider's proposals, oldest first: ``(event_id, reason, outcome, detail)``."""
    with roster.db.transaction() as tx:
        rows = tx.rows(
            "SELECT event_id, reason, outcome, detail FROM template_learning "
            "WHERE person_id = ? ORDER BY decided_at, event_id",
            [person_id],
        )
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]
