"""The rider screen's strings: every language complete, every screen the flow shows covered."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from edge.ui.server import LANGUAGES, load_strings

# the flow's screens are named in edge/flow.py and the modules it is built from
FLOW_FILES = sorted((Path(__file__).resolve().parents[2] / "edge").glob("flow*.py"))
FLOW = "".join(path.read_text(encoding="utf-8") for path in FLOW_FILES)


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__


def test_there_are_at_least_two_languages() -> None:
    assert "en" in LANGUAGES and len(LANGUAGES) >= 2


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_has_every_string(language: str) -> None:
    assert shape(load_strings(language)) == shape(load_strings("en"))


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_screen_of_the_flow_has_words(language: str) -> None:
    strings = load_strings(language)
    keys = set(re.findall(r'Screen\("([a-z_]+)"', FLOW))
    assert keys, "no screens found in edge/flow.py"
    for key in keys:
        assert strings[key]["title"].strip(), f"{language}: {key} has no title"
    for refusal in ("open_rental", "blocked", "expired", "not_allowed"):
        assert strings["refusal"][refusal]


def test_placeholders_match_across_languages() -> None:
    english = load_strings("en")
    for language in LANGUAGES:
        other = load_strings(language)
        for key, entry in english.items():
            if isinstance(entry, dict) and "title" in entry:
                for part in ("title", "body"):
                    assert set(re.findall(r"\{\w+\}", entry[part])) == set(
                        re.findall(r"\{\w+\}", other[key][part])
                    ), f"{language}: {key}.{part}"


def test_unknown_language_fails_at_start() -> None:
    with pytest.raises(ValueError, match="no strings for language 'xx'"):
        load_strings("xx")


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_out_of_service_reason_has_words(language: str) -> None:
    source = (Path(__file__).resolve().parents[2] / "edge" / "service.py").read_text("utf-8")
    reasons = set(re.findall(r'return "([a-z_]+)"', source)) | {"stopping"}
    assert {"maintenance", "outbox_full", "camera_lost"} <= reasons
    strings = load_strings(language)
    for reason in reasons:
        assert strings["service"][reason].strip(), f"{language}: {reason} has no words"
