"""Errors raised by the face models package (``models``): model files and pictures.

The tree::

    ModelError
    ├── ModelMissingError (FileNotFoundError)   a file named in the manifest is not installed
    ├── ModelMismatchError (ValueError)         a file's sha256 differs from the manifest
    └── ImageError (ValueError)                 a picture cannot be read or decoded
                                                (``hardware.errors.FrameError`` is one too)

``models`` imports none of the other packages, so its root is its own; the CLI maps it to
its exit codes (an ``ImageError`` is bad input, 4; any other ``ModelError`` is 5).
"""

from __future__ import annotations


class ModelError(Exception):
    """Root of every error of the face models package."""


class ModelMissingError(ModelError, FileNotFoundError):
    """A model file named in the manifest cannot be found."""


class ModelMismatchError(ModelError, ValueError):
    """A model file does not match the checksum in the manifest."""


class ImageError(ModelError, ValueError):
    """A picture cannot be read or decoded; the message starts with its name."""
