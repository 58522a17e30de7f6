"""The face pipeline on real photos (``../shared/faces/dev``) through the real dlib model.

Every photo is encoded once per session (``dev_samples``); the tests then decide on those
encodings, so the whole module runs in well under a minute on two cores.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.vision import evaluation
from edge.vision.analysis import identify
from edge.vision.live import LiveConfig, LivePipeline
from edge.vision.liveness import LivenessConfig
from edge.vision.matcher import Gallery
from edge.vision.openset import encode_cached
from edge.vision.policy import ThresholdMarginPolicy, cohort_policy, load_operating_points
from hardware.cameras import Frame, ReplayCamera, open_camera
from hardware.config import CameraConfig
from hardware.errors import CameraOpenError, FrameError
from models.analysis import analyse
from models.encoder import FaceEngine
from models.errors import ImageError
from models.images import read_image
from models.quality import QualityConfig
from tests.benchmarks.face_clips import blank_frame, face_box, visit_frames

POLICY = ThresholdMarginPolicy()  # the shipped operating point
HELD_OUT = ("person_04", "person_12", "person_17")


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture(scope="session")
def dev_samples(dev_faces: Path, engine: FaceEngine) -> list[evaluation.Sample]:
    """Every dev photo through the single-frame path, once."""
    return evaluation.encode_samples(engine, evaluation.collect(dev_faces), QualityConfig())


def by_path(samples: list[evaluation.Sample], relative: str) -> evaluation.Sample:
    return next(s for s in samples if s.path.as_posix().endswith(relative))


def test_encodings_are_face_recognitions(dev_faces: Path, engine: FaceEngine) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition

    for relative in ("person_03/01.jpg", "person_09/02.png"):
        image = read_image(dev_faces / relative)
        observation = engine.observe(image)
        assert observation is not None
        box = observation.box
        reference = face_recognition.face_encodings(
            image, [(box.top, box.right, box.bottom, box.left)]
        )[0]
        assert np.array_equal(observation.encoding, reference)


def test_every_identity_photo_passes_the_gate_and_others_do_not(
    dev_samples: list[evaluation.Sample],
) -> None:
    labelled = [s for s in dev_samples if s.label is not None]
    assert len(labelled) == 52
    assert [s.path.name for s in labelled if s.encoding is None] == []
    assert by_path(dev_samples, "_other/group_01.jpg").reason == "several faces"
    assert by_path(dev_samples, "_other/noface_02.png").reason == "no face"
    assert by_path(dev_samples, "_other/profile_01.png").reason == "no face"


def test_open_set_on_dev_has_no_wrong_person_and_no_stranger_accepted(
    dev_samples: list[evaluation.Sample],
) -> None:
    rows = []
    for seed in range(10):
        split = evaluation.open_set_split(dev_samples, per_person=1, holdout=0.3, seed=seed)
        rows += evaluation.run_probes(split, POLICY)
    counts = evaluation.count(rows)
    assert counts["wrong_person"] == 0
    assert counts["unknown_accepted"] == 0
    assert counts["unknown"] >= 100
    assert counts["recognition_rate"] >= 0.7


def test_several_enrolment_photos_recognise_more(dev_samples: list[evaluation.Sample]) -> None:
    one = evaluation.count(evaluation.run_probes(evaluation.open_set_split(dev_samples, 1), POLICY))
    two = evaluation.count(evaluation.run_probes(evaluation.open_set_split(dev_samples, 2), POLICY))
    assert two["wrong_person"] == one["wrong_person"] == 0
    assert two["recognition_rate"] > one["recognition_rate"]


def test_a_rider_enrolled_from_several_photos_is_matched_against_their_mean(
    dev_samples: list[evaluation.Sample],
) -> None:
    policy = cohort_policy(load_operating_points())
    fused, apart = (
        {"genuine": 0, "correct": 0, "wrong_person": 0, "unknown_accepted": 0} for _ in "ab"
    )
    for seed in range(6):
        split = evaluation.open_set_split(dev_samples, 2, holdout=0.3, seed=seed)
        assert len(evaluation.split_gallery(split)) == len({s.label for s in split.gallery})
        for tally, fuse in ((fused, True), (apart, False)):
            counts = evaluation.count(evaluation.run_probes(split, policy, fuse=fuse))
            for key in tally:
                tally[key] += counts[key]
    assert fused["genuine"] == apart["genuine"] > 0
    assert fused["wrong_person"] == apart["wrong_person"] == 0
    assert fused["unknown_accepted"] == apart["unknown_accepted"] == 0
    assert fused["correct"] > apart["correct"]


def test_enrolment_templates_are_jittered_and_repeatable(
    dev_faces: Path, engine: FaceEngine, dev_samples: list[evaluation.Sample]
) -> None:
    enroller = engine.with_jitters(10)
    image = read_image(dev_faces / "person_03" / "01.jpg")
    first = analyse(enroller, image, QualityConfig()).encoding
    again = analyse(enroller, image, QualityConfig()).encoding
    live = by_path(dev_samples, "person_03/01.jpg").encoding
    assert first is not None and again is not None and live is not None
    assert np.array_equal(first, again)  # the same photo always gives the same template
    assert 0.01 < float(np.linalg.norm(first - live)) < 0.2  # a variation of the same face
    # the other photos of this person are no further from the template than from the plain one
    others = [s.encoding for s in dev_samples if s.label == "person_03" and s.encoding is not None]
    assert (
        np.mean([np.linalg.norm(o - first) for o in others[1:]])
        <= np.mean([np.linalg.norm(o - live) for o in others[1:]]) + 0.01
    )
    with pytest.raises(ValueError, match="jitters"):
        engine.with_jitters(0)


def test_galleries_use_the_enrolment_templates(
    engine: FaceEngine, dev_samples: list[evaluation.Sample]
) -> None:
    candidates = evaluation.enrolment_candidates(dev_samples, 1)
    assert len({s.label for s in candidates}) == len(candidates) == 17
    templates = evaluation.encode_samples(engine.with_jitters(4), candidates, QualityConfig())
    samples = evaluation.with_templates(dev_samples, templates)
    split = evaluation.open_set_split(samples, 1)
    gallery = evaluation.split_gallery(split)
    first = split.gallery[0]
    assert first.template is not None and first.encoding is not None
    assert not np.array_equal(first.template, first.encoding)
    assert np.allclose(gallery.matrix[0], first.template, atol=1e-6)
    counts = evaluation.count(evaluation.run_probes(split, POLICY))
    assert counts["wrong_person"] == 0 and counts["recognition_rate"] >= 0.7


@pytest.fixture(scope="session")
def bad_images(tmp_path_factory: pytest.TempPathFactory, dev_faces: Path) -> dict[str, Path]:
    """Odd files made from a real photo: each must give a reason, never a crash."""
    folder = tmp_path_factory.mktemp("bad-images")
    photo = cv2.imread(str(dev_faces / "person_03" / "01.jpg"))
    jpeg = (dev_faces / "person_03" / "01.jpg").read_bytes()
    files = {
        "corrupt": (folder / "corrupt.jpg", b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50),
        "truncated": (folder / "truncated.jpg", jpeg[: len(jpeg) // 3]),
        "empty": (folder / "empty.png", b""),
        "text": (folder / "notes.png", b"this is not a picture\n"),
    }
    for path, data in files.values():
        path.write_bytes(data)
    paths = {name: path for name, (path, _) in files.items()}
    paths["grey"] = folder / "grey.png"
    cv2.imwrite(str(paths["grey"]), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    paths["deep"] = folder / "deep16.png"
    cv2.imwrite(str(paths["deep"]), photo.astype(np.uint16) * 257)
    paths["huge"] = folder / "huge-50mp.jpg"
    cv2.imwrite(str(paths["huge"]), cv2.resize(photo, (5900, 8580), interpolation=cv2.INTER_LINEAR))
    paths["many"] = dev_faces / "_other" / "group_06.jpg"
    return paths


def test_bad_input_gives_a_reason_not_a_crash(
    bad_images: dict[str, Path], engine: FaceEngine, dev_samples: list[evaluation.Sample]
) -> None:
    gallery = Gallery(
        [
            (s.label or "", s.encoding)
            for s in dev_samples
            if s.label and s.encoding is not None and s.path.name.startswith("01")
        ]
    )
    for name in ("corrupt", "empty", "text"):
        with pytest.raises(ImageError):
            read_image(bad_images[name])
    try:
        truncated = read_image(bad_images["truncated"])
    except ImageError:
        pass
    else:  # libjpeg returns the top of the picture: whatever it holds, no wrong person
        assert identify(engine, gallery, POLICY, truncated, QualityConfig()).person_id in (
            None,
            "person_03",
        )
    for name in ("grey", "deep", "huge"):
        image = read_image(bad_images[name], max_pixels=40_000_000)
        assert image.dtype == np.uint8 and image.ndim == 3
        result = identify(engine, gallery, POLICY, image, QualityConfig())
        assert result.person_id == "person_03", (name, result)
    many = identify(engine, gallery, POLICY, read_image(bad_images["many"]), QualityConfig())
    assert (many.person_id, many.reason) == (None, "several faces") and (many.faces or 0) >= 5


def test_the_live_pipeline_decides_a_rider_in_two_frames_and_refuses_a_stranger(
    dev_faces: Path, engine: FaceEngine, dev_samples: list[evaluation.Sample]
) -> None:
    enrolled = [
        s
        for s in dev_samples
        if s.label and s.label not in HELD_OUT and s.path.stem == "01" and s.encoding is not None
    ]
    pipe = LivePipeline(
        engine,
        Gallery([(s.label or "", s.encoding) for s in enrolled]),
        POLICY,
        config=LiveConfig(),
    )
    index = 0
    for photo, truth in (
        ("person_03/02.jpg", "person_03"),
        ("person_12/02.png", None),
        ("person_15/02.jpg", "person_15"),
    ):
        image = read_image(dev_faces / photo)
        frames = list(visit_frames(image, face_box(engine, image), 12, seed=index)) + [
            blank_frame(i) for i in range(12)
        ]
        records = []
        for picture in frames:
            outcome = pipe.process(Frame(picture, index / 15, index, photo))
            index += 1
            if outcome.record is not None:
                records.append(outcome.record)
        assert len(records) == 1, (photo, records)
        assert records[0].person_id == truth
        assert records[0].frames_used == 2


def test_a_replayed_still_photo_is_refused_by_liveness(
    dev_faces: Path, engine: FaceEngine, dev_samples: list[evaluation.Sample]
) -> None:
    sample = by_path(dev_samples, "person_03/01.jpg")
    pipe = LivePipeline(
        engine,
        Gallery([("person_03", sample.encoding)]),
        POLICY,
        liveness=LivenessConfig(timeout_s=3.0),
    )
    image = read_image(dev_faces / "person_03" / "02.jpg")
    still = next(visit_frames(image, face_box(engine, image), 1, seed=0))
    records = []
    for index in range(15 * 4):  # four seconds of the same frame
        outcome = pipe.process(Frame(still, index / 15, index, "still"))
        assert outcome.person_id is None
        if outcome.record is not None:
            records.append(outcome.record)
    assert [(r.person_id, r.reason) for r in records] == [(None, "liveness not confirmed")]


def test_replay_camera_reads_folders_and_videos(tmp_path: Path, dev_faces: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(dev_faces / "person_03" / "01.jpg")
    (folder / "b.jpg").write_bytes(b"\xff\xd8 broken")
    (folder / "c.png").symlink_to(dev_faces / "person_09" / "01.png")
    clock = iter(float(i) for i in range(100))
    camera = ReplayCamera(folder, fps=10, clock=clock.__next__, sleep=lambda s: None, skip_bad=True)
    frames = list(camera.frames())
    assert [(f.source, f.index) for f in frames] == [("a.jpg", 0), ("c.png", 1)]
    assert frames[0].timestamp < frames[1].timestamp
    with pytest.raises(FrameError, match=r"b\.jpg"):
        list(ReplayCamera(folder, fps=1000).frames())

    configured = open_camera(CameraConfig(kind="replay", source=str(folder), fps=100))
    assert [f.source for f in configured.frames()] == ["a.jpg", "c.png"]  # a bad file is skipped
    with pytest.raises(CameraOpenError, match="no such folder"):
        list(open_camera(CameraConfig(kind="replay", source=str(tmp_path / "gone"))).frames())

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15, (320, 240))
    for i in range(5):
        writer.write(np.full((240, 320, 3), 40 * i, dtype=np.uint8))
    writer.release()
    replay = list(ReplayCamera(video, fps=1000).frames())
    assert [f.source for f in replay] == [f"clip.avi#{i}" for i in range(1, 6)]
    assert replay[0].image.shape == (240, 320, 3)


def test_the_analysis_of_one_picture_says_why(dev_faces: Path, engine: FaceEngine) -> None:
    image = read_image(dev_faces / "person_03" / "01.jpg")
    small = cv2.resize(image, (image.shape[1] // 6, image.shape[0] // 6))
    assert analyse(engine, small, QualityConfig()).reason == "face too small"
    dark = (image * 0.15).astype(np.uint8)
    assert analyse(engine, dark, QualityConfig()).reason == "too dark"
    blurred = cv2.GaussianBlur(image, (0, 0), 6)
    assert analyse(engine, blurred, QualityConfig()).reason == "face blurred"
    assert analyse(engine, image, QualityConfig()).usable


def test_sensor_noise_does_not_make_a_blurred_face_pass(
    dev_faces: Path, engine: FaceEngine
) -> None:
    # A camera adds noise to every frame; noise raises a plain Laplacian measure, so a face
    # blurred enough to move its encoding by about 0.35 used to pass the gate once noisy.
    image = read_image(dev_faces / "person_03" / "01.jpg")
    face = max(engine.detect(image), key=lambda box: box.area)
    rng = np.random.default_rng(3)

    def noisy(picture: np.ndarray) -> np.ndarray:
        return np.clip(picture + rng.normal(0.0, 3.0, picture.shape), 0, 255).astype(np.uint8)

    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 3.0 * face.width / 128)
    assert analyse(engine, noisy(blurred), QualityConfig()).reason == "face blurred"
    assert analyse(engine, noisy(image.astype(np.float32)), QualityConfig()).usable


def test_the_encoding_cache_answers_only_for_the_gate_it_was_made_under(
    tmp_path: Path, dev_faces: Path, engine: FaceEngine
) -> None:
    samples = [evaluation.Sample(dev_faces / "person_03" / "01.jpg", "person_03")]
    cache = tmp_path / "encodings.npz"
    first = encode_cached(engine, samples, QualityConfig(), 40_000_000, cache, "m")
    assert first[0].encoding is not None
    # a stricter gate refuses the photo: the cached encoding must not answer for it
    strict = QualityConfig(min_sharpness=10_000.0)
    refused = encode_cached(engine, samples, strict, 40_000_000, cache, "m")
    assert (refused[0].encoding, refused[0].reason) == (None, "face blurred")
    again = encode_cached(engine, samples, QualityConfig(), 40_000_000, cache, "m")
    assert again[0].encoding is not None
    assert np.array_equal(again[0].encoding, first[0].encoding)
