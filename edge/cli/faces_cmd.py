"""``kiosk faces``: identify photos against a roster, and measure accuracy."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from edge.cli.context import state
from edge.cli.roster_cmd import roster_store
from edge.errors import InputError
from edge.vision import evaluation, setup
from edge.vision.analysis import Identification, analyse, decide
from edge.vision.policy import UNREADABLE, ThresholdMarginPolicy
from hardware.cameras import read_image
from hardware.errors import FrameError

app = typer.Typer(
    help="Identify faces against a roster, or measure accuracy on labelled photos.",
    no_args_is_help=True,
)


@app.command("identify")
def identify(
    ctx: typer.Context,
    roster: Annotated[Path, typer.Option("--roster", help="The roster file.", metavar="PATH")],
    images: Annotated[list[Path], typer.Argument(help="Photos to identify.", metavar="IMAGE...")],
) -> None:
    """Print one JSON object per image: who it shows, by the kiosk's single-frame policy.

    Keys: image, person_id (null unless accepted), distance (to the nearest enrolled
    template), margin (how much further the nearest other rider is), faces (how many
    were found; null when the image cannot be read) and reason: match, unknown,
    ambiguous, empty roster, no face, several faces, face too small, face cut off,
    face blurred, too dark, too bright, face turned, unreadable image.
    """
    settings = state(ctx).settings()
    vision = settings.vision
    if not roster.is_file():
        raise InputError(f"--roster {roster}: no such roster (enrol riders with kiosk enroll)")
    engine = setup.engine(vision)
    store = roster_store(settings, roster)
    try:
        gallery = setup.gallery(store, engine.model_version)
    finally:
        store.close()
    policy = setup.policy(vision)
    quality = setup.quality_config(vision.quality)
    for path in images:
        try:
            image = read_image(path, vision.max_image_pixels)
        except FrameError as exc:
            typer.echo(f"kiosk: warning: {exc}", err=True)
            result = Identification(None, None, None, None, UNREADABLE)
        else:
            result = decide(gallery, policy, analyse(engine, image, quality))
        typer.echo(json.dumps(result.as_json(str(path))))


SWEEP_THRESHOLDS = (0.40, 0.42, 0.44, 0.46, 0.47, 0.48, 0.50, 0.52, 0.54, 0.56, 0.58, 0.60)
SWEEP_MARGINS = (0.0, 0.04, 0.08, 0.12)
HISTOGRAM_EDGES = tuple(round(0.05 * i, 2) for i in range(0, 25))


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    folder: Annotated[
        Path,
        typer.Argument(
            help="Labelled photos: one sub-folder per identity (_-prefixed: unlabelled).",
            metavar="DIR",
        ),
    ],
    probe: Annotated[
        Path | None,
        typer.Option(
            "--probe",
            help="Probe with this second tree; DIR is then enrolled whole.",
            metavar="DIR",
        ),
    ] = None,
    per_person: Annotated[
        int,
        typer.Option("--per-person", min=1, max=20, help="One tree: photos enrolled per identity."),
    ] = 1,
    holdout: Annotated[
        float,
        typer.Option(
            "--holdout",
            min=0.0,
            max=0.9,
            help="One tree: fraction of identities left out of the roster (unknown probes).",
        ),
    ] = 0.0,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, max=1000, help="One tree: repeat the holdout draw.")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first holdout draw.")] = 0,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Override vision.match_threshold.")
    ] = None,
    margin: Annotated[
        float | None, typer.Option("--margin", help="Override vision.match_margin.")
    ] = None,
    with_sweep: Annotated[
        bool,
        typer.Option("--sweep", help="Also count outcomes over a grid of thresholds and margins."),
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write the full report (no templates) here.", metavar="PATH"),
    ] = None,
) -> None:
    """Measure accuracy: correct, wrong-person, missed and unknown-accepted counts.

    One tree: the first --per-person photos of each identity are enrolled, the rest probe;
    identities with fewer photos and a --holdout fraction are never enrolled (unknowns).
    With --probe: DIR is enrolled, the --probe tree probes. Uses the kiosk's single-frame
    path and decision policy. The exact protocol is in docs/face-pipeline.md.
    """
    settings = state(ctx).settings()
    vision = settings.vision
    engine = setup.engine(vision)
    quality = setup.quality_config(vision.quality)
    policy = ThresholdMarginPolicy(
        vision.match_threshold if threshold is None else threshold,
        vision.match_margin if margin is None else margin,
    )
    started = time.perf_counter()
    first = evaluation.encode_samples(
        engine, evaluation.collect(folder), quality, vision.max_image_pixels
    )
    second = (
        evaluation.encode_samples(
            engine, evaluation.collect(probe), quality, vision.max_image_pixels
        )
        if probe is not None
        else None
    )
    encode_s = time.perf_counter() - started
    if second is not None:
        splits = [evaluation.two_tree_split(first, second)]
    else:
        splits = [
            evaluation.open_set_split(first, per_person, holdout, seed + n) for n in range(rounds)
        ]
    results = [r for split in splits for r in evaluation.run_probes(split, policy)]
    totals = evaluation.count(results)
    report: dict[str, Any] = {
        "protocol": {
            "enrol": str(folder),
            "probe": str(probe) if probe else None,
            "per_person": None if probe else per_person,
            "holdout": None if probe else holdout,
            "rounds": len(splits),
            "seed": seed,
            "threshold": policy.threshold,
            "margin": policy.margin,
            "model": engine.model_version,
            "photos_encoded": len(first) + len(second or []),
            "encode_seconds": round(encode_s, 1),
        },
        "enrolled": [len({s.label for s in split.gallery}) for split in splits],
        "counts": totals,
        "histograms": {
            "edges": list(HISTOGRAM_EDGES),
            "genuine_own": evaluation.histogram(
                [
                    r.own_distance
                    for r in results
                    if r.kind == "genuine" and r.own_distance is not None
                ],
                HISTOGRAM_EDGES,
            ),
            "nearest_other": evaluation.histogram(
                [
                    r.other_distance
                    for r in results
                    if r.kind != "unlabelled" and r.other_distance is not None
                ],
                HISTOGRAM_EDGES,
            ),
        },
        "probes": [asdict(r) for r in results],
    }
    if with_sweep:
        report["sweep"] = evaluation.sweep(results, SWEEP_THRESHOLDS, SWEEP_MARGINS)
    _print_eval(report, with_sweep)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        typer.echo(f"report: {json_path}")


def _print_eval(report: dict[str, Any], with_sweep: bool) -> None:
    c = report["counts"]
    p = report["protocol"]
    typer.echo(
        f"threshold {p['threshold']}, margin {p['margin']}, {p['rounds']} round(s), "
        f"{p['photos_encoded']} photos encoded in {p['encode_seconds']} s"
    )
    typer.echo(
        f"genuine probes {c['genuine']}: correct {c['correct']}, wrong person {c['wrong_person']}, "
        f"missed {c['missed']} {c['missed_reasons'] or ''}".rstrip()
    )
    typer.echo(
        f"unknown probes {c['unknown']}: rejected {c['unknown_rejected']}, "
        f"accepted {c['unknown_accepted']}"
    )
    if c["unlabelled"]:
        typer.echo(
            f"unlabelled probes {c['unlabelled']}: accepted {c['unlabelled_accepted']} (not scored)"
        )
    typer.echo(
        f"recognition rate {c['recognition_rate']}, wrong-person rate {c['wrong_person_rate']}, "
        f"unknown accept rate {c['unknown_accept_rate']}"
    )
    if with_sweep:
        typer.echo("threshold margin correct wrong missed unknown_accepted")
        for row in report["sweep"]:
            typer.echo(
                f"{row['threshold']:.2f}      {row['margin']:.2f}   {row['correct']:>7} {row['wrong_person']:>5} "
                f"{row['missed']:>6} {row['unknown_accepted']:>16}"
            )
