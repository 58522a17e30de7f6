"""The update bundle's format, its signature, and the rules of a switch (no files, no clock)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.config import UpdateSection
from edge.update.bundle import (
    FileEntry,
    Manifest,
    check_signature,
    manifest_bytes,
    parse_manifest,
    public_key_text,
    safe_path,
    sign_manifest,
    to_prune,
    wait_healthy,
)
from edge.update.errors import BundleError, SignatureError

DIGEST = "ab" * 32


def manifest_data(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": "1.2.0",
        "created_at": "2026-01-02T03:04:05Z",
        "python": "3.11",
        "project_wheel": "wheels/powerbank_kiosk-1.2.0-py3-none-any.whl",
        "requirements": {"aarch64": "requirements/aarch64.txt"},
        "units": ["systemd/kiosk-edge.service"],
        "files": [
            {"path": path, "sha256": DIGEST, "size": 10}
            for path in (
                "wheels/powerbank_kiosk-1.2.0-py3-none-any.whl",
                "requirements/aarch64.txt",
                "systemd/kiosk-edge.service",
            )
        ],
    }
    data.update(over)
    return data


def test_manifest_round_trips_through_its_canonical_bytes() -> None:
    manifest = Manifest.model_validate(manifest_data())
    data = manifest_bytes(manifest)
    assert parse_manifest(data) == manifest
    assert manifest_bytes(parse_manifest(data)) == data  # the signed bytes are stable


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"version": "../etc"}, "version"),
        ({"format": 2}, "format"),
        ({"requirements": {"armv7l": "requirements/aarch64.txt"}}, "architectures"),
        ({"project_wheel": "wheels/other.whl"}, "not listed"),
        ({"units": ["systemd/missing.service"]}, "not one of the kiosk's"),
        ({"units": ["systemd/kiosk-missing.service"]}, "not listed"),
        ({"extra": 1}, "extra"),
        ({"created_at": "2026-01-02T03:04:05"}, "timezone"),  # no order against other builds
    ],
)
def test_bad_manifests_are_refused_in_one_line(over: dict[str, Any], reason: str) -> None:
    with pytest.raises(BundleError) as caught:
        parse_manifest(json.dumps(manifest_data(**over)).encode())
    assert reason in str(caught.value).lower()
    assert "\n" not in str(caught.value)


def test_project_wheel_must_be_the_manifests_version() -> None:
    files = manifest_data()["files"]
    files[0] = {
        "path": "wheels/powerbank_kiosk-1.1.0-py3-none-any.whl",
        "sha256": DIGEST,
        "size": 1,
    }
    data = manifest_data(project_wheel=files[0]["path"], files=files)
    with pytest.raises(BundleError, match=r"not version 1\.2\.0"):
        parse_manifest(json.dumps(data).encode())


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../x", "wheels/../../x", "a//b", "./a", "a\\b", "a\nb", ""]
)
def test_unsafe_paths(path: str) -> None:
    assert not safe_path(path)
    data = manifest_data(
        files=[*manifest_data()["files"], {"path": path or "x/", "sha256": DIGEST, "size": 1}]
    )
    with pytest.raises(BundleError):
        parse_manifest(json.dumps(data).encode())


@given(st.lists(st.sampled_from(["a", "b.whl", "..", ".", "", "c d"]), min_size=1, max_size=4))
def test_a_safe_path_stays_inside_the_bundle(parts: list[str]) -> None:
    path = "/".join(parts)
    if safe_path(path):
        assert ".." not in PurePosixPath(path).parts
        assert not PurePosixPath(path).is_absolute()


def test_signature_by_the_pinned_key_passes_and_any_other_fails() -> None:
    release, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    data = manifest_bytes(Manifest.model_validate(manifest_data()))
    check_signature(data, sign_manifest(data, release), public_key_text(release))
    with pytest.raises(SignatureError, match="bad signature"):
        check_signature(data, sign_manifest(data, other), public_key_text(release))
    with pytest.raises(SignatureError, match="bad signature"):
        check_signature(data + b" ", sign_manifest(data, release), public_key_text(release))
    with pytest.raises(SignatureError, match="not signed"):
        check_signature(data, None, public_key_text(release))
    with pytest.raises(SignatureError, match="release_public_key"):
        check_signature(data, sign_manifest(data, release), None)
    with pytest.raises(SignatureError, match="not a base64"):
        check_signature(data, b"!!not base64!!", public_key_text(release))


def test_signature_errors_are_bundle_errors_with_the_input_exit_code() -> None:
    from edge.cli.exits import exit_code_for

    assert exit_code_for(SignatureError("x")) == 4
    assert exit_code_for(BundleError("x")) == 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_healthy_needs_consecutive_passes() -> None:
    answers = iter([True, False, True, True, True])
    clock = FakeClock()
    ok, _ = wait_healthy(lambda: (next(answers), "x"), 60, 1, 3, clock, clock.sleep)
    assert ok and clock.now == 4  # the streak restarted after the failure


def test_wait_healthy_gives_up_at_the_deadline_with_the_last_answer() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def never() -> tuple[bool, str]:
        calls.append(clock.now)
        return False, f"HTTP 503 at {clock.now:g}"

    ok, detail = wait_healthy(never, 10, 2, 1, clock, clock.sleep)
    assert not ok and clock.now <= 10
    assert calls == [0, 2, 4, 6, 8, 10] and detail == "HTTP 503 at 10"


def test_to_prune_keeps_the_newest_and_both_links() -> None:
    versions = ["1.0", "1.1", "1.2", "1.3", "1.4"]
    assert to_prune(versions, current="1.4", previous="1.3", keep=3) == ["1.0", "1.1"]
    assert to_prune(versions, current="1.4", previous="1.0", keep=2) == ["1.1", "1.2"]
    assert to_prune(versions, current="1.1", previous=None, keep=2) == ["1.0", "1.2"]


def test_update_settings_validate_commands_and_key() -> None:
    section = UpdateSection()
    assert section.restart_commands[0] == ["systemctl", "daemon-reload"]
    with pytest.raises(ValidationError, match="program name"):
        UpdateSection(restart_commands=[[]])
    with pytest.raises(ValidationError, match="program name"):
        UpdateSection(health_command=[""])
    with pytest.raises(ValidationError, match="release_public_key"):
        UpdateSection(release_public_key="not-a-key")
    key = public_key_text(Ed25519PrivateKey.generate())
    assert UpdateSection(release_public_key=key).release_public_key == key


def test_file_entry_digest_is_checked() -> None:
    with pytest.raises(ValidationError):
        FileEntry(path="a", sha256="XYZ", size=1)
    assert Manifest.model_validate(manifest_data()).created_at == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
