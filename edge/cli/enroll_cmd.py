"""``kiosk enroll``: enrol riders from photos into a roster (the encrypted roster store)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import numpy.typing as npt
import structlog
import typer

from cloud_sync.roster_wire import RiderRecord, Template
from edge.cli.auth import require_technician
from edge.cli.context import state
from edge.cli.roster_cmd import roster_store
from edge.enrol import Accepted, Refusal, check_person_id, enrol_image, images_by_person
from edge.errors import InputError
from edge.vault.store import LoadedRoster, RosterStore
from edge.vision import setup
from edge.vision.engine import Encoding

log = structlog.get_logger("edge.enrol")

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


def _save(
    store: RosterStore,
    loaded: LoadedRoster,
    person: str,
    accepted: list[Accepted],
    name: str | None,
    model: str,
) -> int:
    """Add ``accepted`` to the rider's record (keeping what it held); returns its template count."""
    rider = loaded.riders.get(person)
    held = _held(loaded, person)
    new = [Template(model, np.asarray(item.encoding, dtype=np.float32)) for item in accepted]
    display_name = name if name is not None else (rider.display_name if rider else "")
    if rider is not None:
        record = RiderRecord(
            display_name, (*held, *new), rider.entitlements, claim_hash=rider.claim_hash
        )
    else:
        record = RiderRecord(display_name, (*held, *new))
    store.enrol(person, record)
    return sum(1 for t in record.templates if t.model == model)


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
) -> None:
    """Enrol riders from photos: one template per usable photo, a reason for each refused one.

    Either --person-id ID [--name NAME] IMAGE..., or --from-dir DIR (sub-folders starting
    with _ or . are skipped). A photo with no face, with several faces of similar size, or
    failing the quality gate (too small, cut off, blurred, too dark or bright, turned away)
    is refused with the reason. No photo is stored: templates go into the encrypted roster.
    Exits 4 when a rider ends up with no usable photo.
    """
    if from_dir is not None and (person_id is not None or images or name is not None):
        raise InputError("use either --from-dir DIR or --person-id ID IMAGE..., not both")
    if from_dir is None:
        if person_id is None:
            raise InputError("give --person-id ID with one or more images, or --from-dir DIR")
        if not images:
            raise InputError(f"--person-id {person_id}: give one or more images of the rider")
        plan = {check_person_id(person_id, "--person-id"): list(images)}
    else:
        plan = images_by_person(from_dir)

    settings = state(ctx).settings()
    require_technician(roster.parent, "kiosk enroll")
    vision = settings.vision
    engine = setup.engine(vision)
    quality = setup.quality_config(vision.quality)
    store = roster_store(settings, roster)
    failed: list[str] = []
    try:
        loaded = store.load()
        for person, paths in plan.items():
            held = _held(loaded, person)
            accepted: list[Accepted] = []
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
            if accepted or (name is not None and person in loaded.riders):
                total = _save(store, loaded, person, accepted, name, engine.model_version)
            else:
                total = len(held)
            if total == 0:
                failed.append(person)
            typer.echo(
                f"{person}  enrolled {len(accepted)} of {len(paths)} photo(s); "
                f"{total} template(s) in the roster"
            )
            log.debug(
                "enrol.person",
                person_id=person,
                accepted=len(accepted),
                refused=len(paths) - len(accepted),
            )
        info = store.info()
    finally:
        store.close()
    typer.echo(f"roster {roster}: {info.riders} rider(s), version {info.version}")
    if failed:
        shown = ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else "")
        raise InputError(
            f"{len(failed)} of {len(plan)} rider(s) not enrolled (every photo refused): {shown}"
        )
