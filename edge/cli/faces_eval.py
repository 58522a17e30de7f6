"""``kiosk faces eval``: accuracy on labelled photos (the protocols are in
docs/face-pipeline.md; the work is done in ``edge.vision.evaluation`` and ``openset``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cloud_sync.errors import InputError
from edge.cli.context import state
from edge.cli.output_paths import check_elsewhere, check_output
from edge.vision import (
    calibrate,
    crossval,
    evaluation,
    fleet_eval,
    fleet_sim,
    fleet_tally,
    setup,
    tallies,
)
from edge.vision.claim import verify_policy
from edge.vision.degrade import KIOSK
from edge.vision.frames import encode_frames
from edge.vision.live_probe import CAMERA_SIZE, LIVE_PATH, degraded_encoder, live_encoder
from edge.vision.openset import (
    encode_cached,
    eval_summary,
    live_summary,
    open_set_live_summary,
    open_set_report,
    open_set_summary,
)
from edge.vision.policy import Policy, ThresholdMarginPolicy, cohort_policy
from models.encoder import FaceEncoder, FaceEngine
from models.quality import QualityConfig


class Protocol(StrEnum):
    folders = "folders"
    open_set = "open-set"
    fleet = "fleet"


class Half(StrEnum):
    A = "A"
    B = "B"


class Degrade(StrEnum):
    none = "none"
    kiosk = "kiosk"


class PolicyName(StrEnum):
    cohort = "cohort"
    threshold = "threshold"


SWEEP_THRESHOLDS = (0.40, 0.42, 0.44, 0.46, 0.47, 0.48, 0.50, 0.52, 0.54, 0.56, 0.58, 0.60)
SWEEP_MARGINS = (0.0, 0.04, 0.08, 0.12)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--sizes {text!r}: give roster sizes such as 100,300,1000") from None
    if not sizes or min(sizes) < 1:
        raise InputError(f"--sizes {text!r}: give roster sizes such as 100,300,1000")
    return sizes


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
    protocol: Annotated[
        Protocol,
        typer.Option(
            "--protocol",
            help="folders: the --per-person/--holdout protocol; open-set: the gallery/genuine/"
            "unknown protocol with sub-rosters and identity halves; fleet: kiosks with "
            "automatic sets, riders and strangers visiting them (--fleets).",
        ),
    ] = Protocol.folders,
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
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first random draw.")] = 0,
    half: Annotated[
        Half | None, typer.Option("--half", help="Open set: measure on this half of identities.")
    ] = None,
    calibrate_half: Annotated[
        Half | None,
        typer.Option(
            "--calibrate-half",
            help="Open set: calibrate the operating points on this half, measure on the other.",
        ),
    ] = None,
    split_seed: Annotated[
        int,
        typer.Option(
            "--split-seed", help="Open set: seed of the identity halves (the first, with folds)."
        ),
    ] = 10,
    cross_validate: Annotated[
        int | None,
        typer.Option(
            "--cross-validate",
            min=1,
            max=20,
            help="Open set: for N split seeds, calibrate on each half in turn and measure on "
            "the other; report every fold and the counts pooled over them.",
            metavar="N",
        ),
    ] = None,
    sizes: Annotated[
        str, typer.Option("--sizes", help="Open set: sub-roster sizes.", metavar="N,N,...")
    ] = "100,300,1000",
    draws: Annotated[
        int, typer.Option("--draws", min=1, max=100, help="Open set: draws per sub-roster size.")
    ] = 5,
    unknown_budget: Annotated[
        float,
        typer.Option(
            "--unknown-budget",
            min=0.0,
            max=0.5,
            help="With --calibrate-half or --cross-validate: the share of the calibration "
            "half's strangers the fitted points may accept.",
        ),
    ] = calibrate.UNKNOWN_BUDGET,
    policy_name: Annotated[
        PolicyName | None,
        typer.Option("--policy", help="Decision policy (default: vision.policy)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Threshold policy (and the --cross-validate baseline): override "
            "vision.match_threshold.",
        ),
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin",
            help="Threshold policy (and the --cross-validate baseline): override "
            "vision.match_margin.",
        ),
    ] = None,
    points_path: Annotated[
        Path | None,
        typer.Option(
            "--points",
            help="Operating points to use (default: vision.operating_points).",
            metavar="PATH",
        ),
    ] = None,
    write_points: Annotated[
        Path | None,
        typer.Option(
            "--write-points",
            help="With --calibrate-half: write the operating points here.",
            metavar="PATH",
        ),
    ] = None,
    encodings: Annotated[
        Path | None,
        typer.Option(
            "--encodings",
            help="Cache the photos' encodings in this file (templates: keep it out of the "
            "repository, e.g. under /tmp).",
            metavar="PATH",
        ),
    ] = None,
    frames: Annotated[
        int,
        typer.Option(
            "--frames",
            min=1,
            max=8,
            help="Probe with N simulated camera frames of each photo, fused as the live "
            "pipeline fuses them (1: the photo itself).",
        ),
    ] = 1,
    degrade: Annotated[
        Degrade,
        typer.Option(
            "--degrade",
            help="kiosk: probe with each photo as a kiosk camera gives it (640x480 frame, face "
            "50-80 px, gamma 1.4, noise, JPEG 55), offline and live; enrolment keeps the photo.",
        ),
    ] = Degrade.none,
    with_sweep: Annotated[
        bool,
        typer.Option("--sweep", help="Also count outcomes over a grid of thresholds and margins."),
    ] = False,
    fleets: Annotated[
        str,
        typer.Option(
            "--fleets",
            help="Fleet: RIDERS:KIOSKS,... (RIDERS 'all': every rider of the tree).",
            metavar="R:K,...",
        ),
    ] = "all:4,all:8,387:8",
    home_share: Annotated[
        float,
        typer.Option("--home-share", min=0.0, max=1.0, help="Fleet: trips to the home kiosk."),
    ] = 0.8,
    declared_homes: Annotated[
        float,
        typer.Option(
            "--declared-homes", min=0.0, max=1.0, help="Fleet: riders who declared a home kiosk."
        ),
    ] = 0.5,
    auto_set_size: Annotated[
        int,
        typer.Option(
            "--auto-set-size", min=0, max=10_000, help="Fleet: the cloud's auto_set_size."
        ),
    ] = 300,
    oracle_sets: Annotated[
        bool,
        typer.Option(
            "--oracle-sets",
            help="Fleet: each kiosk's set is exactly its home riders, which no history can "
            "tell: the ceiling for any rule that picks sets.",
        ),
    ] = False,
    fleet_seeds: Annotated[
        int,
        typer.Option("--fleet-seeds", min=1, max=100, help="Fleet: seeds from --seed on."),
    ] = 5,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write the full report (no templates) here.", metavar="PATH"),
    ] = None,
) -> None:
    """Measure accuracy: correct, wrong-person, missed and unknown-accepted counts.

    One tree: the first --per-person photos of each identity are enrolled, the rest probe;
    identities with fewer photos and a --holdout fraction are never enrolled (unknowns).
    With --probe: DIR is enrolled, the --probe tree probes. --protocol open-set: the first
    photo of each identity with 2+ photos is enrolled, their other photos are genuine
    probes, single-photo identities are unknown probes; reported for the whole gallery and
    seeded sub-rosters (--sizes, --draws), on one half of the identities (--half),
    calibrated on one half and measured on the other (--calibrate-half), or that over
    several splits (--cross-validate). Uses the kiosk's
    single-frame path and decision policy. The protocols are in docs/face-pipeline.md.
    Every protocol also reports the live path's figures: each probe photo in a 640x480
    camera frame, its face found as kiosk run finds it (vision.live_detect_width).
    """
    settings = state(ctx).settings()
    kept = (settings.kiosk.state_dir, settings.keys_dir)
    if json_path is not None:  # before the long evaluation, not after it
        check_output(json_path, kept, "--json")
    if encodings is not None:
        check_elsewhere(encodings, kept, "--encodings", "face templates")
    vision = settings.vision
    if protocol is not Protocol.folders and (
        probe is not None or per_person != 1 or holdout or rounds != 1 or with_sweep
    ):
        raise InputError(
            f"--protocol {protocol.value} uses one tree, one photo per person, no holdout, "
            "rounds or sweep"
        )
    if protocol is Protocol.fleet and (cross_validate or write_points or policy_name):
        raise InputError("--protocol fleet takes no --cross-validate, --write-points or --policy")
    if oracle_sets and protocol is not Protocol.fleet:
        raise InputError("--oracle-sets is for --protocol fleet")
    try:
        fleet_shapes = fleet_sim.parse_fleets(fleets)
    except ValueError as exc:
        raise InputError(f"--fleets {exc}") from None
    if points_path is not None and not points_path.is_file():
        raise InputError(f"--points {points_path}: no such file")
    if protocol is Protocol.folders and (half or calibrate_half or write_points or cross_validate):
        raise InputError(
            "--half, --calibrate-half, --write-points and --cross-validate need --protocol open-set"
        )
    if cross_validate is not None and (
        half or calibrate_half or write_points or points_path or policy_name
    ):
        raise InputError(
            "--cross-validate calibrates each fold itself: drop --half, --calibrate-half, "
            "--write-points, --points and --policy (--threshold and --margin set its baseline)"
        )
    if degrade is Degrade.kiosk and frames > 1:
        raise InputError("--degrade and --frames are two ways of probing: give one")
    if write_points is not None and calibrate_half is None:
        raise InputError("--write-points needs --calibrate-half")
    if unknown_budget != calibrate.UNKNOWN_BUDGET and calibrate_half is None and not cross_validate:
        raise InputError("--unknown-budget applies to --calibrate-half and --cross-validate")
    if half is not None and calibrate_half is not None and half == calibrate_half:
        raise InputError("--half must be the half not used by --calibrate-half")
    if (threshold is not None or margin is not None) and cross_validate is None:
        policy_name = policy_name or PolicyName.threshold
        if policy_name is not PolicyName.threshold:
            raise InputError("--threshold and --margin apply to --policy threshold")
    engine = setup.engine(vision)
    quality = setup.quality_config(vision.quality)
    if calibrate_half is not None or cross_validate is not None:
        points: dict[str, Any] = {}  # made on the calibration half
    elif points_path is not None:
        points = setup.operating_points(vision.model_copy(update={"operating_points": points_path}))
    else:
        points = setup.operating_points(vision)
    started = time.perf_counter()

    enrol_engine = setup.enrol_engine(vision, engine)

    def encode(
        samples: list[evaluation.Sample],
        encoder: FaceEngine,
        variant: str = "",
        how: evaluation.Encode = evaluation.encode_samples,
    ) -> list[evaluation.Sample]:
        if encodings is not None:
            return encode_cached(
                encoder,
                samples,
                quality,
                vision.max_image_pixels,
                encodings,
                engine.model_version,
                variant,
                how,
            )
        return how(encoder, samples, quality, vision.max_image_pixels)

    def fused_frames(
        encoder: FaceEncoder,
        samples: Sequence[evaluation.Sample],
        gate: QualityConfig,
        max_pixels: int,
    ) -> list[evaluation.Sample]:
        return encode_frames(encoder, samples, gate, max_pixels, frames)

    first = encode(evaluation.collect(folder), engine)
    second = encode(evaluation.collect(probe), engine) if probe is not None else None
    camera = KIOSK if degrade is Degrade.kiosk else None
    if camera is not None:  # every photo probes as a kiosk camera frame of it
        first = evaluation.with_frames(
            first, encode(first, engine, camera.name, degraded_encoder(camera))
        )
        if second is not None:
            second = evaluation.with_frames(
                second, encode(second, engine, camera.name, degraded_encoder(camera))
            )
    if frames > 1:  # every photo probes as fused simulated frames
        variant = f"frames{frames}"
        first = evaluation.with_frames(first, encode(first, engine, variant, fused_frames))
        if second is not None:
            second = evaluation.with_frames(second, encode(second, engine, variant, fused_frames))
    # the photos that may be enrolled are encoded again as the kiosk enrols them
    enrollable = evaluation.enrolment_candidates(first, None if probe is not None else per_person)
    if enrol_engine.jitters > 1:
        templates = encode(enrollable, enrol_engine, f"jitter{enrol_engine.jitters}")
        first = evaluation.with_templates(first, templates)
    encode_s = time.perf_counter() - started
    photos = len(first) + len(second or [])
    run_facts = {
        "enrol": str(folder),
        "model": engine.model_version,
        "enrol_jitters": enrol_engine.jitters,
        "frames": frames,
        "degrade": None if camera is None else camera.name,
        "photos_encoded": photos,
        "encode_seconds": round(encode_s, 1),
    }
    # the live path: the same photos, each probe as kiosk run sees it (camera frame, live
    # detection); every protocol reports its figures beside the offline ones
    width = vision.live_detect_width
    live_facts = {
        "camera": list(CAMERA_SIZE),
        "detect_width": width,
        "degrade": None if camera is None else camera.name,
    }
    live_variant = f"live{width}{LIVE_PATH}" + ("" if camera is None else f"-{camera.name}")

    def live(samples: list[evaluation.Sample]) -> list[evaluation.Sample]:
        made = encode(samples, engine, live_variant, live_encoder(width, camera))
        return evaluation.with_frames(samples, made)

    if cross_validate is not None:

        def validated(samples: list[evaluation.Sample]) -> dict[str, Any]:
            return crossval.cross_validate(
                samples,
                split_seed=split_seed,
                folds=cross_validate,
                sizes=_sizes(sizes),
                draws=draws,
                seed=seed,
                unknown_budget=unknown_budget,
                baseline=ThresholdMarginPolicy(
                    vision.match_threshold if threshold is None else threshold,
                    vision.match_margin if margin is None else margin,
                ),
            )

        report = validated(first)
        report["protocol"].update(run_facts)
        report["live"] = {**live_facts, **crossval.pooled_only(validated(live(first)))}
        typer.echo("\n".join(crossval.summary(report)))
        typer.echo("\n".join(crossval.live_summary(report["live"])))
    elif protocol is Protocol.fleet:  # offline probes only (docs/face-pipeline.md)
        report = fleet_eval.evaluate(
            first,
            points,
            half=None if half is None else half.value,
            calibrate_half=None if calibrate_half is None else calibrate_half.value,
            split_seed=split_seed,
            fleets=fleet_shapes,
            sim=fleet_sim.Simulation(home_share, declared_homes, auto_set_size, oracle_sets),
            seeds=range(seed, seed + fleet_seeds),
            unknown_budget=unknown_budget,
            fuse=vision.fuse_templates,
        )
        report["protocol"].update(run_facts)
        typer.echo("\n".join(fleet_tally.summary(report)))
    elif protocol is Protocol.open_set:

        def open_set(
            samples: list[evaluation.Sample], use: dict[str, Any], measured: str | None, cal: bool
        ) -> dict[str, Any]:
            return open_set_report(
                samples,
                use,
                settings_policy=vision.policy,
                policy_name=None if policy_name is None else policy_name.value,
                threshold=vision.match_threshold if threshold is None else threshold,
                margin=vision.match_margin if margin is None else margin,
                half=measured,
                calibrate_half=None if calibrate_half is None or not cal else calibrate_half.value,
                split_seed=split_seed,
                sizes=_sizes(sizes),
                draws=draws,
                seed=seed,
                unknown_budget=unknown_budget,
            )

        report = open_set(first, points, None if half is None else half.value, cal=True)
        report["protocol"].update(run_facts)
        # the live probes are judged with the very points the offline figures used
        made = open_set(live(first), report["points"], report["protocol"]["half"], cal=False)
        report["live"] = {**live_facts, "rosters": made["rosters"], "claim": made["claim"]}
        typer.echo("\n".join(open_set_summary(report)))
        typer.echo("\n".join(open_set_live_summary(report["live"])))
        if write_points is not None:
            write_points.write_text(json.dumps(report["points"], indent=1) + "\n", "utf-8")
            typer.echo(f"operating points: {write_points}")
    else:
        policy: Policy
        if (policy_name or PolicyName(vision.policy)) is PolicyName.threshold:
            policy = ThresholdMarginPolicy(
                vision.match_threshold if threshold is None else threshold,
                vision.match_margin if margin is None else margin,
            )
        else:
            policy = cohort_policy(points)
        verifier = verify_policy(points)

        def probed(
            one: list[evaluation.Sample], two: list[evaluation.Sample] | None
        ) -> tuple[list[evaluation.Split], list[evaluation.ProbeResult]]:
            if two is not None:
                made = [evaluation.two_tree_split(one, two)]
            else:
                made = [
                    evaluation.open_set_split(one, per_person, holdout, seed + n)
                    for n in range(rounds)
                ]
            fuse = vision.fuse_templates
            return made, [
                r for m in made for r in evaluation.run_probes(m, policy, verifier, fuse=fuse)
            ]

        splits, results = probed(first, second)
        _, live_results = probed(live(first), None if second is None else live(second))
        report = {
            "protocol": {
                "enrol": str(folder),
                "probe": str(probe) if probe else None,
                "per_person": None if probe else per_person,
                "holdout": None if probe else holdout,
                "rounds": len(splits),
                "seed": seed,
                "policy": type(policy).__name__,
                "threshold": policy.threshold,
                "margin": policy.margin,
                "model": engine.model_version,
                "enrol_jitters": enrol_engine.jitters,
                "fuse_templates": vision.fuse_templates,
                "frames": frames,
                "degrade": None if camera is None else camera.name,
                "photos_encoded": photos,
                "encode_seconds": round(encode_s, 1),
            },
            "enrolled": [len({s.label for s in split.gallery}) for split in splits],
            "counts": evaluation.count(results),
            "histograms": tallies.histograms(results),
            "probes": [asdict(r) for r in results],
            "live": {
                **live_facts,
                "counts": evaluation.count(live_results),
                "probes": [asdict(r) for r in live_results],
            },
        }
        if with_sweep:
            report["sweep"] = tallies.sweep(results, SWEEP_THRESHOLDS, SWEEP_MARGINS)
        typer.echo("\n".join(eval_summary(report, with_sweep)))
        typer.echo("\n".join(live_summary(report["live"])))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        typer.echo(f"report: {json_path}")
