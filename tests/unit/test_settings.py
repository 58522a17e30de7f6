"""Settings: file, environment and secret sources; every bad value named by its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_sync.errors import ConfigError
from edge.settings import load_settings, redacted


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kiosk.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_no_file() -> None:
    settings = load_settings()
    assert settings.kiosk.mode == "rental"
    assert settings.board.baudrate == 115200


def test_file_values_are_used(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[kiosk]\nid = "kiosk-0042"\nmode = "boarding"\n[board]\nbaudrate = 57600\n'
    )
    settings = load_settings(path)
    assert (settings.kiosk.id, settings.kiosk.mode, settings.board.baudrate) == (
        "kiosk-0042",
        "boarding",
        57600,
    )


def test_environment_overrides_file_with_nested_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[board]\nbaudrate = 57600\n")
    monkeypatch.setenv("KIOSK_BOARD__BAUDRATE", "9600")
    monkeypatch.setenv("KIOSK_KIOSK__ID", "kiosk-env")
    settings = load_settings(path)
    assert settings.board.baudrate == 9600
    assert settings.kiosk.id == "kiosk-env"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[board]\nbaudrate = "fast"\n', "board.baudrate: Input should be a valid integer"),
        ("[board]\ncolour = 3\n", "board.colour: unknown setting"),
        ("[nonsense]\nx = 1\n", "nonsense: unknown setting"),
        (
            "[board]\nbaudrate = 9000000\n",
            "board.baudrate: Input should be less than or equal to 3000000",
        ),
        ("[mqtt]\nport = 0\n", "mqtt.port: Input should be greater than or equal to 1"),
        ('[kiosk]\nmode = "party"\n', "kiosk.mode: Input should be 'rental' or 'boarding'"),
        ('[kiosk]\nid = "Kiosk 42!"\n', "kiosk.id: String should match pattern"),
        ('[ui]\nhost = "not a host!"\n', "ui.host: String should match pattern"),
    ],
)
def test_bad_values_are_named_by_field_path(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[board]\nbaudrate = "x"\ncolour = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}: board.") for line in lines)


def test_missing_file_and_broken_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[board\nbaudrate = 1\n"))


def test_bad_environment_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSK_CAMERA__FPS", "-3")
    with pytest.raises(ConfigError, match=r"camera\.fps: Input should be greater than 0"):
        load_settings()


def test_secret_is_read_from_credentials_directory_and_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mqtt__password").write_text("s3cret-pw", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = load_settings()
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(settings)
    shown = redacted(settings)
    assert shown["mqtt"]["password"] == "**********"
    assert "s3cret-pw" not in str(shown)


def test_the_clouds_enrolment_encodes_like_a_kiosk_with_default_settings() -> None:
    """kiosk-cloud riders add builds FaceEngine(), QualityConfig() and the default pixel cap
    (it has no kiosk settings); they must be what a default kiosk.toml gives."""
    import inspect

    from edge.config import VisionSection
    from edge.vision import setup
    from models.encoder import FaceEngine
    from models.images import DEFAULT_MAX_PIXELS
    from models.quality import QualityConfig

    vision = VisionSection()
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(FaceEngine.__init__).parameters.items()
    }
    assert defaults["detect_width"] == vision.detect_width
    assert defaults["max_upsample"] == vision.max_upsample
    assert defaults["min_score"] == vision.min_detection_score
    assert defaults["jitters"] == vision.enrol_jitters
    assert setup.quality_config(vision.quality) == QualityConfig()
    assert vision.max_image_pixels == DEFAULT_MAX_PIXELS
