"""The rider screen's words: one JSON file per language in ``edge/ui/strings``.

Every language has the same keys (a unit test compares them): a ``title`` and ``body`` for
each screen the flow shows (``title_named`` on success screens, used when the kiosk greets
by name), the positioning ``hint`` of each ``models.hints.Hint``, the out-of-service
reasons (``service``), and the page's own words (keypad, language buttons, ``lost``).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

UI_DIR = Path(str(resources.files("edge.ui")))
LANGUAGES = tuple(sorted(path.stem for path in (UI_DIR / "strings").glob("*.json")))


@cache
def _read(language: str) -> str:
    return (UI_DIR / "strings" / f"{language}.json").read_text(encoding="utf-8")


def load_strings(language: str) -> dict[str, Any]:
    """The words of ``language``; ``ValueError`` naming the languages there are."""
    if language not in LANGUAGES:
        raise ValueError(f"no strings for language {language!r} (have {', '.join(LANGUAGES)})")
    data: dict[str, Any] = json.loads(_read(language))
    return data
