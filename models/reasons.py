"""Why a picture gave no face to act on: stable strings that ``kiosk faces identify``
prints, shared by the single-frame analysis (``models.analysis``) and the kiosk's decision
policy (``edge.vision.policy``, which adds the reasons of a decision)."""

from __future__ import annotations

NO_FACE = "no face"
SEVERAL_FACES = "several faces"
