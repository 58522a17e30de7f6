"""Errors raised while locating and checking model files (``models``).

The tree::

    ModelError
    ├── ModelMissingError (FileNotFoundError)   a file named in the manifest is not installed
    └── ModelMismatchError (ValueError)         a file's sha256 differs from the manifest
"""

from __future__ import annotations


class ModelError(Exception):
    """Root of every model-file error."""


class ModelMissingError(ModelError, FileNotFoundError):
    """A model file named in the manifest cannot be found."""


class ModelMismatchError(ModelError, ValueError):
    """A model file does not match the checksum in the manifest."""
