"""The claim step's runtime side with a real gallery, real scrypt hashes and the shipped
verification policy: the held face, wrong tries, the lockout, no claim set."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from cloud_sync.claim_code import hash_claim
from cloud_sync.roster_wire import RiderRecord, Template
from edge.runtime.claim_step import ClaimStep, ClaimVerified, NeedsClaim, default_policy
from edge.runtime.claim_tries import ClaimTries
from edge.vault.live import open_roster
from edge.vision.claim import RIDER_LIMIT, ClaimLockout
from edge.vision.consensus import ClaimWindow
from edge.vision.live import ClaimNeeded
from edge.vision.matcher import Gallery
from hardware.sim import BoardSimulator
from models.encoder import FaceEngine
from models.images import read_image
from tests.integration.runtime import test_runtime
from tests.integration.runtime.test_runtime import (
    Running,
    config,
    events,
    frames,
    running,
    types,
    wait_for,
)

VECTORS = {
    name: np.random.default_rng(seed).normal(0, 0.12, 128) for seed, name in enumerate("abc")
}
CLAIMS = {"a": hash_claim("1234", log2_n=10), "b": hash_claim("5555", log2_n=10), "c": None}


def step(clock: list[float]) -> ClaimStep:
    gallery = Gallery(list(VECTORS.items()))
    posted: list[ClaimVerified] = []
    return ClaimStep(
        default_policy(),
        ClaimLockout(3, 300, 600),
        lambda: (gallery, CLAIMS),
        posted.append,
        lambda: clock[0],
    )


def face(name: str, track: int = 1) -> ClaimNeeded:
    return ClaimNeeded(track, ClaimWindow(8, [VECTORS[name] + 0.005]), 3)


def test_the_right_code_verifies_the_face() -> None:
    claims = step([0.0])
    assert claims.ask(NeedsClaim(0.0, face("a"))).tries_left == 3
    verified = claims.check(face("a"), "1234")
    assert (verified.person_id, verified.reason) == ("a", "match")


def test_three_wrong_codes_lock_the_face_and_the_code() -> None:
    clock = [0.0]
    claims = step(clock)
    outcomes = [claims.check(face("a"), code) for code in ("1111", "2222", "3333")]
    assert [(o.reason, o.tries_left) for o in outcomes] == [
        ("claim not recognised", 2),
        ("claim not recognised", 1),
        ("claim locked", 0),
    ]
    assert claims.check(face("a"), "1234").reason == "claim locked"  # the right code too
    assert claims.ask(NeedsClaim(1.0, face("a"))).tries_left == 0
    clock[0] = 301.0
    assert claims.check(face("a"), "1234").person_id == "a"


def test_another_riders_code_does_not_open_this_face() -> None:
    claims = step([0.0])
    assert claims.check(face("a"), "5555").person_id is None


def test_a_rider_without_a_code_is_told_to_set_one() -> None:
    claims = step([0.0])
    verified = claims.check(face("c"), "1234")
    assert (verified.person_id, verified.reason) == (None, "no claim set")


def test_nothing_held_nothing_verified() -> None:
    claims = step([0.0])
    assert claims.check(None, "1234").reason == "claim expired"


# -- end to end: kiosk run's parts, the real face model, the board simulator ------------------

board = test_runtime.board  # the fixtures of kiosk run's own end-to-end tests
engine = test_runtime.engine


def enrol_with_claim(state: Path, engine: FaceEngine, photo: Path, code: str | None) -> None:
    image = read_image(photo)
    vector = engine.encode(image, max(engine.detect(image), key=lambda box: box.area))
    store = open_roster(state / "roster.sqlite", state / "keys", "kiosk-e2e")
    record = RiderRecord(
        "Asha Example",
        (Template(engine.model_version, np.asarray(vector, dtype=np.float32)),),
        claim_hash=None if code is None else hash_claim(code),
        lookalike=True,  # a lookalike always confirms a claim
    )
    store.enrol("rider-3", record)
    store.close()


def claim_screen(kiosk: Running, tries: int, detail: str | None = None) -> bool:
    state = kiosk.screen
    return state["key"] == "claim" and state["tries"] == tries and state["detail"] == detail


def test_a_lookalike_types_the_code_and_rents(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol_with_claim(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "4821")
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 400)
    with running(config(tmp_path, images, board.path)) as kiosk:
        wait_for(lambda: claim_screen(kiosk, 3) or not kiosk.alive(), timeout=30)
        assert kiosk.runtime.claims.holding
        # while the claim screen shows, the kiosk keeps gathering the face for the check
        wait_for(lambda: kiosk.runtime.claims.held_frames >= 5, timeout=20)
        assert kiosk.parts.hub.claim("4821")
        wait_for(lambda: "rental.started" in types(tmp_path) or not kiosk.alive(), timeout=30)
    started = [event for event in events(tmp_path) if event["type"] == "rental.started"]
    assert len(started) == 1 and started[0]["payload"]["person_id"] == "rider-3"  # type: ignore[index]
    assert len(board.ejects) == 1
    assert "claim_checking" in [screen["key"] for screen in kiosk.screens]
    assert not kiosk.runtime.claims.holding  # the face is dropped after the claim step


def test_three_wrong_codes_lock_and_nothing_is_ejected(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol_with_claim(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "4821")
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 400)
    with running(config(tmp_path, images, board.path)) as kiosk:
        wait_for(lambda: claim_screen(kiosk, 3) or not kiosk.alive(), timeout=30)
        for code, left in (("1111", 2), ("2222", 1)):
            assert kiosk.parts.hub.claim(code)
            wait_for(lambda left=left: claim_screen(kiosk, left, "wrong"), timeout=10)
        assert kiosk.parts.hub.claim("3333")
        wait_for(lambda: kiosk.shows("claim_locked"), timeout=10)
        assert not kiosk.parts.hub.claim("4821")  # no keypad on the locked screen
    assert board.ejects == []
    assert "rental.started" not in types(tmp_path)
    reasons = [e["payload"]["reason"] for e in events(tmp_path) if e["type"] == "face.unrecognised"]  # type: ignore[index]
    assert reasons == ["claim locked"]


def test_a_rider_without_a_code_is_told_to_set_one_in_the_app(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    enrol_with_claim(tmp_path, engine, dev_faces / "person_03" / "01.jpg", None)
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 400)
    with running(config(tmp_path, images, board.path)) as kiosk:
        wait_for(lambda: claim_screen(kiosk, 3) or not kiosk.alive(), timeout=30)
        assert kiosk.parts.hub.claim("1234")
        wait_for(lambda: kiosk.shows("no_claim"), timeout=10)
    assert board.ejects == []


def test_a_still_photo_sent_to_the_claim_step_is_asked_a_prompt_and_refused(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    """With the shipped liveness (blink, and the challenge when the risk is higher), a photo
    of a lookalike held up to ``kiosk run`` is asked to turn or blink twice on the rider
    page, cannot answer, and never reaches the keypad."""
    enrol_with_claim(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "4821")
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 400)
    liveness = {"method": "blink", "challenge": "risky", "rounds": 1, "challenge_timeout_s": 2}
    prompts = {"turn_left", "turn_right", "blink_twice"}
    with running(config(tmp_path, images, board.path, vision__liveness=liveness)) as kiosk:
        wait_for(
            lambda: any(s["detail"] in prompts for s in kiosk.screens) or not kiosk.alive(),
            timeout=30,
        )
        reasons = lambda: [  # noqa: E731
            e["payload"]["reason"]  # type: ignore[index]
            for e in events(tmp_path)
            if e["type"] == "face.unrecognised"
        ]
        wait_for(lambda: "liveness not confirmed" in reasons() or not kiosk.alive(), timeout=30)
        assert kiosk.alive(), kiosk.errors
        assert any(s["detail"] in prompts for s in kiosk.screens)  # the page said the prompt
        assert not kiosk.runtime.claims.holding
    shown = [s["key"] for s in kiosk.screens]
    assert "claim" not in shown and "claim_checking" not in shown, shown
    assert board.ejects == []
    assert "rental.started" not in types(tmp_path)


# -- wrong tries that a new track or a restart does not reset ----------------------------------


def encoding(engine: FaceEngine, photo: Path) -> np.ndarray:
    image = read_image(photo)
    return np.asarray(engine.encode(image, max(engine.detect(image), key=lambda b: b.area)))


def dev_step(
    engine: FaceEngine, dev_faces: Path, clock: list[float], tries: ClaimTries | None = None
) -> tuple[ClaimStep, np.ndarray]:
    """A claim step over person_03 (enrolled from 01.jpg, code 4821) and person_05, and the
    face of person_03's 02.jpg as the kiosk would hold it."""
    gallery = Gallery(
        [
            ("rider-3", encoding(engine, dev_faces / "person_03" / "01.jpg")),
            ("rider-5", encoding(engine, dev_faces / "person_05" / "01.jpg")),
        ]
    )
    claims = {"rider-3": hash_claim("4821", log2_n=10), "rider-5": hash_claim("7777", log2_n=10)}
    held = encoding(engine, dev_faces / "person_03" / "02.jpg")
    step = ClaimStep(
        default_policy(),
        ClaimLockout(3, 300, 600),
        lambda: (gallery, claims),
        lambda verified: None,
        lambda: clock[0],
        tries,
    )
    return step, held


def held_face(vector: np.ndarray, track: int) -> ClaimNeeded:
    return ClaimNeeded(track, ClaimWindow(8, [vector]), 3)


def guess(
    step: ClaimStep, vector: np.ndarray, track: int, clock: list[float], codes: list[str]
) -> int:
    """One visit (a new track): the codes typed until the kiosk stops asking; how many."""
    typed = 0
    left = step.ask(NeedsClaim(clock[0], held_face(vector, track))).tries_left
    while left > 0 and codes:
        verified = step.check(held_face(vector, track), codes.pop(0))
        assert verified.person_id is None
        typed, left = typed + 1, verified.tries_left
        clock[0] += 5.0
    clock[0] += 3.0  # out of view and back: a new track
    return typed


def test_a_new_track_of_the_same_face_does_not_get_fresh_tries(
    dev_faces: Path, engine: FaceEngine
) -> None:
    """A brute-forcer holding person_03's face steps out of view after each lock: every
    visit is a new track and every code a new one, yet the wrong codes count against the
    rider the face could be, and the right code is refused once they reach the limit."""
    clock = [0.0]
    step, held = dev_step(engine, dev_faces, clock)
    codes = [f"{n:04d}" for n in range(100)]  # 4821 is not among them
    typed = sum(guess(step, held, track, clock, codes) for track in range(1, 11))
    assert typed == RIDER_LIMIT.tries == 6
    assert step.ask(NeedsClaim(clock[0], held_face(held, 11))).tries_left == 0
    assert step.check(held_face(held, 11), "4821").reason == "claim locked"


def test_wrong_tries_survive_a_restart_and_end_with_their_window(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    """The counts are in the state folder's claims.sqlite: a claim step opened again on it
    (the kiosk restarted) still refuses the locked rider, until the window has passed."""
    wall = [1_000_000.0]
    clock = [0.0]
    keep = RIDER_LIMIT.window_s
    tries = ClaimTries(tmp_path / "claims.sqlite", keep, clock=lambda: wall[0])
    step, held = dev_step(engine, dev_faces, clock, tries)
    codes = [f"{n:04d}" for n in range(100)]
    assert guess(step, held, 1, clock, codes) == 3
    assert guess(step, held, 2, clock, codes) == 3
    tries.close()

    clock = [0.0]  # a new process: a new monotonic clock, a new lockout, a new key
    tries = ClaimTries(tmp_path / "claims.sqlite", keep, clock=lambda: wall[0])
    step, held = dev_step(engine, dev_faces, clock, tries)
    assert step.ask(NeedsClaim(0.0, held_face(held, 1))).tries_left == 0
    assert step.check(held_face(held, 1), "4821").reason == "claim locked"
    wall[0] += keep
    assert step.check(held_face(held, 1), "4821").person_id == "rider-3"
    tries.close()
    stored = sqlite3.connect(tmp_path / "claims.sqlite").execute("SELECT * FROM wrong_tries")
    assert {row[1] for row in stored} <= {"kiosk", "rider:rider-3"}  # ids and times only


def test_kiosk_run_restarted_keeps_the_riders_wrong_tries(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine, board: BoardSimulator
) -> None:
    """Three wrong codes, a restart, three more, a restart: the lookalike's face is shown
    the locked screen at once, with no keypad for the right code."""
    enrol_with_claim(tmp_path, engine, dev_faces / "person_03" / "01.jpg", "4821")
    images = frames(tmp_path / "frames", dev_faces / "person_03" / "02.jpg", 400)
    settings = config(tmp_path, images, board.path)
    for first in ("1111", "4444"):
        with running(settings) as kiosk:
            wait_for(lambda: claim_screen(kiosk, 3) or not kiosk.alive(), timeout=30)
            for n in range(3):
                assert kiosk.parts.hub.claim(str(int(first) + n * 1111).zfill(4))
                if n < 2:
                    wait_for(lambda n=n: claim_screen(kiosk, 2 - n, "wrong"), timeout=10)
            wait_for(lambda: kiosk.shows("claim_locked"), timeout=10)
    with running(settings) as kiosk:
        wait_for(lambda: kiosk.shows("claim_locked") or not kiosk.alive(), timeout=30)
        assert kiosk.alive(), kiosk.errors
        assert "claim" not in [s["key"] for s in kiosk.screens]
        assert not kiosk.parts.hub.claim("4821")
    assert board.ejects == []
