"""``kiosk enroll``: enrol riders from photos into a roster (the encrypted roster store)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import numpy.typing as npt
import structlog
import typer

from cloud_sync.claim_code import CLAIM_MAX_DIGITS, CLAIM_MIN_DIGITS, ClaimFormatError, hash_claim
from cloud_sync.errors import InputError
from cloud_sync.roster_wire import Entitlements, RiderRecord, Template
from edge.cli.auth import require_technician
from edge.cli.context import state
from edge.cli.progress import bar
from edge.cli.roster_cmd import hand_edit, record_edit, roster_store
from edge.enrol import check_person_id, images_by_person
from edge.vault.files import record_consent
from edge.vault.owed import Edit
from edge.vault.store import RosterStore
from edge.vault.values import LoadedRoster, Rider
from edge.vision import setup
from models.encoder import Encoding
from models.enrolment import Accepted, Refusal, enrol_image
from models.hints import ONE_PHOTO_HINT

log = structlog.get_logger("edge.enrol")

#: A consent text version, as the cloud takes one.
CONSENT_VERSION = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
# A new template this close to one the rider already has comes from the same photo.
SAME_PHOTO_DISTANCE = 1e-3


def _is_duplicate(encoding: Encoding, existing: list[npt.NDArray[np.floating]]) -> bool:
    return any(
        float(np.linalg.norm(np.asarray(vector, dtype=np.float64) - encoding)) < SAME_PHOTO_DISTANCE
        for vector in existing
    )


def _held(loaded: LoadedRoster, person: str) -> list[Template]:
    """The templates (any model) the roster holds for ``person``."""
    return [
        Template(model, vector)
        for model, entries in loaded.templates.items()
        for pid, vector in entries
        if pid == person
    ]


def _record(
    loaded: LoadedRoster,
    person: str,
    new: list[Template],
    name: str | None,
    claim_hash: str | None = None,
    lookalike: bool | None = None,
) -> RiderRecord:
    """The rider's record with ``new`` templates added; other fields kept unless given."""
    rider = loaded.riders.get(person)
    display_name = name if name is not None else (rider.display_name if rider else "")
    return RiderRecord(
        display_name,
        (*_held(loaded, person), *new),
        rider.entitlements if rider else Entitlements(),
        claim_hash=claim_hash if claim_hash is not None else (rider.claim_hash if rider else None),
        lookalike=lookalike if lookalike is not None else bool(rider and rider.lookalike),
    )


def _save(
    store: RosterStore,
    loaded: LoadedRoster,
    person: str,
    record: RiderRecord,
    edit: Edit | None = None,
) -> None:
    """Store ``record`` (part of ``edit``, when given) and keep the in-memory copy of the
    roster in step with it."""
    version = store.enrol(person, record, edit)
    loaded.riders[person] = Rider(
        person,
        version,
        record.display_name,
        record.entitlements,
        record.claim_hash,
        record.lookalike,
    )
    for entries in loaded.templates.values():
        entries[:] = [(pid, vector) for pid, vector in entries if pid != person]
    for template in record.templates:
        loaded.templates.setdefault(template.model, []).append((person, template.vector))


def _lookalikes(
    loaded: LoadedRoster, person: str, model: str, distance: float
) -> list[tuple[str, float]]:
    """Other riders with a ``model`` template closer than ``distance`` to one of ``person``'s."""
    entries = loaded.templates.get(model, [])
    mine = [np.asarray(v, dtype=np.float64) for pid, v in entries if pid == person]
    closest: dict[str, float] = {}
    for pid, vector in entries:
        if pid == person or not mine:
            continue
        gap = min(float(np.linalg.norm(np.asarray(vector, dtype=np.float64) - m)) for m in mine)
        if gap < distance and gap < closest.get(pid, np.inf):
            closest[pid] = gap
    return sorted(closest.items(), key=lambda item: item[1])


def _flag_lookalikes(
    store: RosterStore, loaded: LoadedRoster, person: str, model: str, distance: float
) -> None:
    """Flag ``person`` and every rider enrolled too close to them (both confirm a claim)."""
    found = _lookalikes(loaded, person, model, distance)
    if not found:
        return
    for other, gap in found:
        typer.echo(
            f"{person}  lookalike of {other} (templates {gap:.3f} apart): "
            "both confirm a claim at the kiosk"
        )
        if not loaded.riders[other].lookalike:
            _save(store, loaded, other, _record(loaded, other, [], None, lookalike=True))
    if not loaded.riders[person].lookalike:
        _save(store, loaded, person, _record(loaded, person, [], None, lookalike=True))


def _ask_claim() -> str:
    """The rider's claim code, typed twice without echo; only its salted hash is kept."""
    digits = f"{CLAIM_MIN_DIGITS}-{CLAIM_MAX_DIGITS} digits"
    code = typer.prompt(f"Claim code ({digits})", hide_input=True, confirmation_prompt=True)
    try:
        return hash_claim(code)
    except ClaimFormatError as exc:
        raise InputError(f"--claim: {exc}") from None


def enroll(
    ctx: typer.Context,
    roster: Annotated[
        Path,
        typer.Option(
            "--roster",
            help="The roster file (created when absent; its keys live in PATH's folder/keys).",
            metavar="PATH",
        ),
    ],
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Photos of the one rider named by --person-id.", metavar="IMAGE..."),
    ] = None,
    person_id: Annotated[
        str | None,
        typer.Option("--person-id", help="The rider's id (letters, digits, . _ -).", metavar="ID"),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The rider's display name (stored sealed).", metavar="NAME"),
    ] = None,
    from_dir: Annotated[
        Path | None,
        typer.Option(
            "--from-dir",
            help="Enrol everyone in DIR: one sub-folder per rider, named by the rider's id.",
            metavar="DIR",
        ),
    ] = None,
    consent: Annotated[
        str | None,
        typer.Option(
            "--consent",
            help="The version of the consent text the riders agreed to (required; recorded "
            "in the roster with the time and who took it).",
            metavar="VERSION",
        ),
    ] = None,
    consent_by: Annotated[
        str | None,
        typer.Option(
            "--consent-by",
            help="Who took the consent (default: this technician's login name).",
            metavar="NAME",
        ),
    ] = None,
    claim: Annotated[
        bool,
        typer.Option(
            "--claim",
            help=f"Ask for the rider's claim code ({CLAIM_MIN_DIGITS}-{CLAIM_MAX_DIGITS} digits, "
            "typed twice); only its salted "
            "hash is stored, sealed in the rider's record.",
        ),
    ] = False,
) -> None:
    """Enrol riders from photos: one template per usable photo, a reason for each refused one.

    Either --person-id ID [--name NAME] IMAGE..., or --from-dir DIR (sub-folders starting
    with _ or . are skipped). --consent VERSION is required: each rider enrolled gets a
    consent record in the roster (the text version, the time, who took it). A photo with no face, with several faces of similar size, or
    failing the quality gate (too small, cut off, blurred, too dark or bright, turned away)
    is refused with the reason. No photo is stored: templates go into the encrypted roster.
    A rider whose template comes closer than the lookalike distance to another rider's is
    flagged, with the other rider, to confirm a claim at the kiosk. Exits 4 when a rider
    ends up with no usable photo.
    """
    if consent is None:
        raise InputError(
            "enrolment needs the riders' consent: give --consent VERSION, the version of the "
            "consent text they agreed to (docs/privacy.md); nothing was enrolled"
        )
    if not re.fullmatch(CONSENT_VERSION, consent):
        raise InputError(
            f"--consent {consent[:64]!r} is not a consent text version (at most 64 letters, "
            "digits, '.', '_', '-')"
        )
    if from_dir is not None and (person_id is not None or images or name is not None):
        raise InputError("use either --from-dir DIR or --person-id ID IMAGE..., not both")
    if from_dir is None:
        if person_id is None:
            raise InputError("give --person-id ID with one or more images, or --from-dir DIR")
        if not images:
            raise InputError(f"--person-id {person_id}: give one or more images of the rider")
        plan = {check_person_id(person_id, "--person-id"): list(images)}
    else:
        if claim:
            raise InputError("--claim enrols one rider: use it with --person-id")
        plan = images_by_person(from_dir)

    settings = state(ctx).settings()
    who = require_technician(roster.parent, "kiosk enroll")
    vision = settings.vision
    engine = setup.enrol_engine(vision)
    quality = setup.quality_config(vision.quality)
    lookalike_distance = float(setup.operating_points(vision)["identify"]["lookalike_distance"])
    claim_hash = _ask_claim() if claim else None
    store = roster_store(settings, roster)
    edit = hand_edit(settings, store, "enrol", who)
    failed: list[str] = []
    progress = bar("enrolling", len(plan), min_total=2)
    task = progress.add_task("enrol", total=len(plan))
    try:
        loaded = store.load()
        progress.start()
        for person, paths in plan.items():
            progress.advance(task)
            held = _held(loaded, person)
            accepted: list[Accepted] = []
            if not paths:
                typer.echo(f"{person}  refused  {person}/: the folder holds no photo")
            for path in paths:
                outcome = enrol_image(engine, path, quality, vision.max_image_pixels)
                if isinstance(outcome, Accepted) and _is_duplicate(
                    outcome.encoding,
                    [t.vector for t in held] + [item.encoding for item in accepted],
                ):
                    outcome = Refusal(path, "already enrolled from this photo")
                if isinstance(outcome, Refusal):
                    typer.echo(f"{person}  refused  {path.name}: {outcome.reason}")
                else:
                    accepted.append(outcome)
            model = engine.model_version
            known = person in loaded.riders
            if accepted or (known and (name is not None or claim_hash is not None)):
                new = [Template(model, np.asarray(a.encoding, dtype=np.float32)) for a in accepted]
                record = _record(loaded, person, new, name, claim_hash)
                _save(store, loaded, person, record, edit)
                given_at = datetime.now(UTC).isoformat(timespec="seconds")
                record_consent(roster, person, consent, "kiosk", consent_by or who, given_at)
                _flag_lookalikes(store, loaded, person, model, lookalike_distance)
                total = sum(1 for pid, _ in loaded.templates.get(model, []) if pid == person)
            else:
                total = len(held)
            if total == 0:
                failed.append(person)
            typer.echo(
                f"{person}  enrolled {len(accepted)} of {len(paths)} photo(s); "
                f"{total} template(s) in the roster"
            )
            if total == 1:
                typer.echo(f"{person}  {ONE_PHOTO_HINT}")
            log.debug(
                "enrol.person",
                person_id=person,
                accepted=len(accepted),
                refused=len(paths) - len(accepted),
            )
        progress.stop()
        info = store.info()
        record_edit(settings, store, edit)
    finally:
        progress.stop()
        store.close()
    typer.echo(f"roster {roster}: {info.riders} rider(s), version {info.version}")
    if failed:
        shown = ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else "")
        raise InputError(
            f"{len(failed)} of {len(plan)} rider(s) not enrolled (every photo refused): {shown}"
        )
