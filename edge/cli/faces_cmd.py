"""``kiosk faces``: identify or verify photos against a roster, and measure accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cloud_sync.errors import InputError
from edge.cli.context import state
from edge.cli.faces_eval import evaluate
from edge.cli.roster_cmd import roster_store
from edge.enrol import check_person_id
from edge.settings import Settings
from edge.vision import setup
from edge.vision.analysis import Identification, decide
from edge.vision.claim import NOT_ENROLLED
from edge.vision.matcher import Gallery
from edge.vision.policy import UNREADABLE
from models.analysis import analyse
from models.encoder import FaceEngine
from models.errors import ImageError
from models.images import read_image, shown_name

app = typer.Typer(
    help="Identify or verify faces against a roster, or measure accuracy on labelled photos.",
    no_args_is_help=True,
)

RosterPath = Annotated[Path, typer.Option("--roster", help="The roster file.", metavar="PATH")]
Images = Annotated[list[Path], typer.Argument(help="Photos to check.", metavar="IMAGE...")]


def _need_roster(roster: Path) -> None:
    if not roster.is_file():
        raise InputError(f"--roster {roster}: no such roster (enrol riders with kiosk enroll)")


def _engine_and_gallery(settings: Settings, roster: Path) -> tuple[FaceEngine, Gallery]:
    """The face engine and the roster's templates for its model, as the kiosk loads them."""
    _need_roster(roster)
    engine = setup.engine(settings.vision)
    store = roster_store(settings, roster, read_only=True)
    try:
        return engine, setup.gallery(store, engine.model_version, settings.vision.fuse_templates)
    finally:
        store.close()


@app.command("identify")
def identify(ctx: typer.Context, roster: RosterPath, images: Images) -> None:
    """Print one JSON object per image: who it shows, by the kiosk's automatic 1:N policy.

    Keys: image, person_id (null unless accepted), distance (to the nearest enrolled
    template), margin (how much further the nearest other rider is), faces (how many
    were found; null when the image cannot be read) and reason: match, claim required
    (close to a rider but not certain enough: the kiosk would ask for a claim), unknown,
    ambiguous, empty roster, no face, several faces, face too small, face cut off, face
    blurred, too dark, too bright, face turned, unreadable image.
    """
    settings = state(ctx).settings()
    vision = settings.vision
    engine, gallery = _engine_and_gallery(settings, roster)
    policy = setup.policy(vision)
    quality = setup.quality_config(vision.quality)
    for path in images:
        try:
            image = read_image(path, vision.max_image_pixels)
        except ImageError as exc:
            typer.echo(f"kiosk: warning: {exc}", err=True)
            result = Identification(None, None, None, None, UNREADABLE)
        else:
            result = decide(gallery, policy, analyse(engine, image, quality))
        typer.echo(json.dumps(result.as_json(shown_name(path))))


@app.command("verify")
def verify(
    ctx: typer.Context,
    roster: RosterPath,
    person_id: Annotated[
        str, typer.Option("--person-id", help="The rider the photos claim to show.", metavar="ID")
    ],
    images: Images,
) -> None:
    """Print one JSON object per image: does it show rider ID, by the claim step's 1:1 policy.

    Keys: image, person_id (the rider asked about), accepted (true or false), distance (to
    the rider's nearest template; null when nothing was encoded or the rider is not
    enrolled) and reason: match, no match, not enrolled, empty roster, no face, several
    faces, face too small, face cut off, face blurred, too dark, too bright, face turned,
    unreadable image.
    """
    check_person_id(person_id, "--person-id")
    settings = state(ctx).settings()
    vision = settings.vision
    engine, gallery = _engine_and_gallery(settings, roster)
    policy = setup.claim_policy(vision)
    quality = setup.quality_config(vision.quality)
    if len(gallery) and person_id not in gallery:
        typer.echo(f"kiosk: warning: {person_id} has no template in {roster}", err=True)
    for path in images:
        distance = None
        try:
            image = read_image(path, vision.max_image_pixels)
        except ImageError as exc:
            typer.echo(f"kiosk: warning: {exc}", err=True)
            accepted, reason = False, UNREADABLE
        else:
            found = analyse(engine, image, quality)
            if found.encoding is None:
                accepted, reason = False, found.reason or UNREADABLE
            else:
                decision = policy.decide(gallery.verify(found.encoding, [person_id]))
                accepted, reason, distance = decision.accepted, decision.reason, decision.distance
                if reason == NOT_ENROLLED:
                    distance = None
        line = {
            "image": shown_name(path),
            "person_id": person_id,
            "accepted": accepted,
            "distance": None if distance is None else round(distance, 4),
            "reason": reason,
        }
        typer.echo(json.dumps(line))


app.command("eval")(evaluate)
