"""Liveness against replays: attacks refused, genuine riders passed, time added.

Run: ``scripts/bench liveness`` (``KIOSK_BENCH_QUICK=1``: four photos). Needs
``../shared/faces/dev`` (used by path). Every identity photo of ``dev/`` becomes a scene
(``liveness_clips``), and each scene is visited (``liveness_visits``, 10 frames a second,
the prompt at 0.5 s) by:

- the rider answering, once for each first prompt (the second prompt drawn from the two
  others);
- a replayed still, and a replayed video of the rider blinking and turning at random,
  once for each first prompt;
- a replayed video that answers the first prompt (an attacker with a clip per prompt);
- for the first photo of each identity: a photo swapped for a turned one, and a phone
  tilted one way and the other, when asked to turn.

The challenge runs with two rounds of ``ROUND_S`` each; the first round alone is what a
one-round challenge would decide. Blink liveness alone (the check every visit makes, and
the only one before the challenge) is fed the same samples. Landmark times: the face mesh
with its eye contours (``FaceEngine.liveness_sample``) beside dlib's 68-point model on the
same boxes of the genuine visits, in the same run. Also reported, per scene, whether the
synthetic closed eye reads as closed (EAR under 0.75 of open) to the eye model and to
dlib's 68 points, and the yaw the mesh measures on a 30-degree synthetic turn.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from edge.vision.liveness import PROMPTS, ChallengeConfig, Prompt, mean_ear
from models.dlib_models import EYE_68
from models.encoder import FaceEngine, pick_face
from models.images import read_image
from models.mesh import MeshModel
from models.quality import pose_from_landmarks
from tests.benchmarks.common import SHARED_FACES, quick, report, summary_ms
from tests.benchmarks.liveness_clips import Scene, camera_frame, close_eyes, prepare, turn_head
from tests.benchmarks.liveness_visits import Result, Visit, run

ROUND_S = 5.0
CONFIG = ChallengeConfig(rounds=2, timeout_s=ROUND_S)


def photos() -> list[tuple[str, Path, bool]]:
    """Every identity photo of dev/, and whether it is its identity's first."""
    dev = SHARED_FACES / "dev"
    found = []
    for folder in sorted(p for p in dev.iterdir() if p.is_dir() and not p.name.startswith("_")):
        files = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
        found += [(f"{folder.name}/{p.name}", p, n == 0) for n, p in enumerate(files)]
    if quick():
        found = [item for item in found if item[2]][:4]
    return found


def second(first: Prompt, rng: random.Random) -> Prompt:
    return rng.choice([p for p in PROMPTS if p != first])


def synthesis_check(engine: FaceEngine, mesh: MeshModel, scene: Scene) -> dict[str, Any]:
    """Does the synthetic closed eye read as closed, and how far does a 30-degree turn go?"""

    def look(image: Any) -> tuple[Any, float, Any] | None:
        frame = camera_frame(image, scene, 0.0, 1)
        boxes = engine.search(frame, 320)
        if not boxes:
            return None
        box = pick_face(boxes, frame.shape[1], frame.shape[0])
        sample = mesh.sample(frame, box.ltrb())
        points = engine._models.landmarks68(frame, box.ltrb())
        ear68 = mean_ear((points[list(EYE_68[0])], points[list(EYE_68[1])]))
        five = pose_from_landmarks(engine.landmarks(frame, box))
        return sample, ear68, five

    opened, shut, turned = (
        look(scene.image),
        look(close_eyes(scene.image, scene.eyes, 1.0)),
        look(turn_head(scene, 30.0)),
    )
    out: dict[str, Any] = {"mesh_closed": None, "dlib68_closed": None, "yaw_30": None}
    if opened is None or opened[0] is None:
        return out
    if shut is not None and shut[0] is not None:
        out["mesh_closed"] = mean_ear(shut[0].eyes) < 0.75 * mean_ear(opened[0].eyes)
        out["dlib68_closed"] = shut[1] < 0.75 * opened[1]
    if turned is not None and turned[0] is not None:
        out["yaw_30"] = turned[0].pose.yaw - opened[0].pose.yaw
        out["five_point_yaw_30"] = turned[2].yaw - opened[2].yaw
    return out


def visits_of(scene: Scene, first_of_identity: bool, seed: int) -> list[tuple[Visit, list[Prompt]]]:
    rng = random.Random(seed)
    planned: list[tuple[Visit, list[Prompt]]] = []
    for n, prompt in enumerate(PROMPTS):
        planned.append((Visit("genuine", scene, seed + n), [prompt, second(prompt, rng)]))
        planned.append((Visit("video", scene, seed + 10 + n), [prompt, second(prompt, rng)]))
    turn = PROMPTS[seed % 2]
    rotating = PROMPTS[seed % 3]
    planned.append((Visit("still", scene, seed + 20), [rotating, second(rotating, rng)]))
    planned.append((Visit("answer", scene, seed + 21), [rotating, second(rotating, rng)]))
    if first_of_identity:
        for n, prompt in enumerate(("turn_left", "turn_right")):
            planned.append((Visit("switch", scene, seed + 30 + n), [prompt, second(prompt, rng)]))
        for n, sign in enumerate((1.0, -1.0)):
            tilt = Visit("tilt", scene, seed + 40 + n, sign)
            planned.append((tilt, [turn, second(turn, rng)]))
    return planned


def main() -> None:
    engine, mesh = FaceEngine(), MeshModel()
    results: list[Result] = []
    checks: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed, (name, path, first) in enumerate(photos()):
        scene = prepare(name, read_image(path), engine, mesh)
        if scene is None:
            print(f"  {name}: no face found, skipped")
            continue
        checks.append(synthesis_check(engine, mesh, scene))
        for item, prompts in visits_of(scene, first, 1000 * seed):
            timed = item.kind == "genuine"
            results.append(run(engine, item, prompts, CONFIG, time_dlib=timed))
    rows = outcome_rows(results)
    genuine = [r for r in results if r.kind == "genuine"]
    mesh_s = [s for r in genuine for s in r.mesh_s]
    dlib_s = [s for r in genuine for s in r.dlib68_s]
    rows.append({"kind": "landmarks: face mesh + eye contours", **summary_ms(mesh_s)})
    rows.append({"kind": "landmarks: dlib 68-point (same boxes)", **summary_ms(dlib_s)})
    report("liveness", rows, notes(checks, genuine, time.perf_counter() - started))


def outcome_rows(results: list[Result]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for result in results:
        groups[(result.kind, result.prompt)].append(result)
        groups[(result.kind, "all")].append(result)
    rows = []
    for (kind, prompt), group in sorted(groups.items()):
        passed_1 = sum(r.first_round == "passed" for r in group)
        passed_2 = sum(r.challenge == "passed" for r in group)
        blink = sum(r.blink_only == "passed" for r in group)
        row: dict[str, Any] = {
            "kind": kind,
            "first prompt": prompt,
            "visits": len(group),
            "1 round passed": passed_1,
            "2 rounds passed": passed_2,
            "blink alone passed": blink,
        }
        if kind == "genuine":
            firsts = [r.first_at for r in group if r.first_round == "passed" and r.first_at]
            both = [r.challenge_at for r in group if r.challenge == "passed" and r.challenge_at]
            row["1 round s (median)"] = round(statistics.median(firsts), 2) if firsts else None
            row["2 rounds s (median)"] = round(statistics.median(both), 2) if both else None
        rows.append(row)
    return rows


def notes(checks: list[dict[str, Any]], genuine: list[Result], took: float) -> dict[str, Any]:
    closed = [c for c in checks if c["mesh_closed"] is not None]
    turned = [c["yaw_30"] for c in checks if c["yaw_30"] is not None]
    five = [c["five_point_yaw_30"] for c in checks if c.get("five_point_yaw_30") is not None]
    frames = sum(r.frames for r in genuine)
    lost = sum(r.frames - r.faces for r in genuine)
    return {
        "scenes": len(checks),
        "challenge": f"{CONFIG.rounds} rounds of {ROUND_S:.0f} s, turn {CONFIG.turn_deg:.0f} deg",
        "closed eye reads closed (eye model / dlib 68)": (
            f"{sum(c['mesh_closed'] for c in closed)} / "
            f"{sum(c['dlib68_closed'] for c in closed)} of {len(closed)} scenes"
        ),
        "30-degree synthetic turn, mesh yaw (median, min)": (
            f"{statistics.median(turned):.1f}, {min(turned):.1f}" if turned else None
        ),
        "30-degree synthetic turn, 5-point yaw ratio (median)": (
            f"{statistics.median(five):.3f}" if five else None
        ),
        "genuine frames where the detector lost the face": f"{lost} of {frames}",
        "run took s": round(took, 1),
    }


if __name__ == "__main__":
    main()
