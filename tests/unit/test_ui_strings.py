"""The rider screen's strings: every language complete, every screen the flow shows covered."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from edge.flow import Screen
from edge.ui.server import LANGUAGES, load_strings
from edge.vision import liveness
from models import analysis, hints, quality
from models.hints import Hint

# the flow's screens are named in the modules of the flow's package (edge/flow/)
FLOW_FILES = sorted((Path(__file__).resolve().parents[2] / "edge" / "flow").glob("*.py"))
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
    assert keys, "no screens found in edge/flow/"
    for key in keys:
        assert strings[key]["title"].strip(), f"{language}: {key} has no title"
    assert strings["lost"]["title"].strip()  # the page's own: the kiosk is gone


def hints_the_code_produces() -> set[str]:
    """Every hint value the vision modules hold (their constants, enumerated), and the enum."""
    found: set[Hint] = set(Hint)
    for module in (quality, analysis, liveness):
        for value in vars(module).values():
            if isinstance(value, Hint):
                found.add(value)
            elif isinstance(value, quality.QualityIssue):
                found.add(value.hint)
    return {str(item) for item in found}


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_hint_the_code_can_produce_has_words(language: str) -> None:
    produced = hints_the_code_produces()
    assert {"come_closer", "more_light", "look_at_camera", "blink"} <= produced
    table = load_strings(language)["hint"]
    assert set(table) == produced, f"{language}: hints without words or words for no hint"
    for key in produced:
        assert table[key].strip(), f"{language}: hint {key} has no words"


def test_a_refusal_names_nobody_and_no_account_detail() -> None:
    for language in LANGUAGES:
        strings = load_strings(language)
        for key in ("not_eligible", "already_served", "no_powerbank", "not_recognised"):
            assert "{name}" not in strings[key]["title"] + strings[key]["body"], key
        assert "refusal" not in strings  # the reason is the app's to tell
        assert "app" in strings["not_eligible"]["body"]


def test_names_appear_only_in_the_named_variant_of_a_success_screen() -> None:
    for language in LANGUAGES:
        for key, entry in load_strings(language).items():
            if isinstance(entry, dict) and "title" in entry:
                assert "{name}" not in entry["title"] + entry["body"], f"{language}: {key}"
                if "title_named" in entry:
                    assert "{name}" in entry["title_named"], f"{language}: {key}"


def test_a_screen_carries_no_more_than_it_shows() -> None:
    assert set(Screen.__dataclass_fields__) == {
        "key",
        "tone",
        "name",
        "slot",
        "detail",
        "tries",
        "seconds",
    }


def test_placeholders_match_across_languages() -> None:
    english = load_strings("en")
    for language in LANGUAGES:
        other = load_strings(language)
        for key, entry in english.items():
            if isinstance(entry, dict):
                for part, words in entry.items():
                    assert set(re.findall(r"\{\w+\}", words)) == set(
                        re.findall(r"\{\w+\}", other[key][part])
                    ), f"{language}: {key}.{part}"


def test_unknown_language_fails_at_start() -> None:
    with pytest.raises(ValueError, match="no strings for language 'xx'"):
        load_strings("xx")


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_out_of_service_reason_has_words(language: str) -> None:
    source = (Path(__file__).resolve().parents[2] / "edge" / "runtime" / "service.py").read_text(
        "utf-8"
    )
    reasons = set(re.findall(r'return "([a-z_]+)"', source)) | {"stopping"}
    assert {"maintenance", "outbox_full", "camera_lost"} <= reasons
    strings = load_strings(language)
    for reason in reasons:
        assert strings["service"][reason].strip(), f"{language}: {reason} has no words"


def test_the_command_lines_hint_words_are_the_rider_pages() -> None:
    # kiosk enroll and kiosk-cloud riders add explain a refusal with models.hints' words
    words = {str(hint): text for hint, text in hints.ENGLISH.items()}
    assert words == load_strings("en")["hint"]
    assert hints.english("more_light") == "It is too dark here: step into the light."
    assert hints.english(None) == hints.english("no_such_hint") == ""


def _texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in _texts(item)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_string_states_a_number_of_its_own(language: str) -> None:
    """Lengths, tries and slots come from the code ({min}, {max}, {tries}, {slot}): a
    number written into the words goes stale when the code changes (a "4-digit code"
    while codes are 4 to 6 digits)."""
    for text in _texts(load_strings(language)):
        assert not re.search(r"\d", re.sub(r"\{\w+\}", "", text)), text
