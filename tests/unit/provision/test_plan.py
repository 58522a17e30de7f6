"""The pure part of ``kiosk provision``: the provisioning file, the plan, the settings and
the first-boot files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloud_sync.errors import ConfigError
from edge.provision.errors import ProvisionFileError, ProvisionStateError
from edge.provision.plan import (
    STEPS,
    Journal,
    ProvisionFile,
    Registration,
    Step,
    check_config,
    first_boot_files,
    parse_provision_file,
    plan,
    refusal,
    render_config,
)
from tests.integration.test_flash import load_flash

TOKEN = "kpt_0123456789abcdefXYZ"
PSK = "s3cret-wifi-pass"
ROSTER_KEY = "LCGzxMjt111nkf8uCSrVQKkF7wP1vm/7Hl96SubPrKo="
GOOD = {
    "kiosk_id": "kiosk-0042",
    "site": "North gate",
    "cloud_url": "https://cloud.example",
    "token": TOKEN,
}


def toml(fields: dict[str, Any]) -> bytes:
    import tomli_w

    return tomli_w.dumps(fields).encode()


def request(**changes: str) -> ProvisionFile:
    return parse_provision_file(toml({**GOOD, **changes}), "boot.toml")


def test_the_file_scripts_flash_writes_is_read_as_written() -> None:
    fields = {
        **GOOD,
        "wifi_ssid": "depot net",
        "wifi_psk": PSK,
        "ssh_key": "ssh-ed25519 AAAAC3Nza tech@depot",
        "timezone": "Europe/Madrid",
    }
    text = load_flash().Provisioning.checked(fields).toml()

    parsed = parse_provision_file(text.encode(), "kiosk-provision.toml")

    assert parsed.kiosk_id == "kiosk-0042" and parsed.site == "North gate"
    assert parsed.cloud_url == "https://cloud.example"
    assert parsed.token.get_secret_value() == TOKEN
    assert (parsed.wifi_ssid, parsed.wifi_psk.get_secret_value()) == ("depot net", PSK)
    assert parsed.ssh_key == fields["ssh_key"] and parsed.timezone == "Europe/Madrid"
    assert TOKEN not in repr(parsed) and PSK not in repr(parsed)


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"kiosk_id": "Kiosk_42"}, "kiosk_id: 'Kiosk_42' must be 2-63 of a-z, 0-9 and -"),
        ({"kiosk_id": None}, "kiosk_id: is missing"),
        ({"site": "  "}, "site: is missing"),
        ({"site": "a\nb"}, "site: must be one line of at most 200 characters"),
        ({"cloud_url": "ftp://cloud"}, "cloud_url: 'ftp://cloud' is not an http(s) URL"),
        ({"token": "tiny-token"}, "token: must be 16-256 URL-safe characters"),
        ({"token": 12345678901234567}, "token: must be a string in quotes"),
        ({"wifi_ssid": "depot"}, "wifi_ssid and wifi_psk go together"),
        ({"wifi_ssid": "x" * 33, "wifi_psk": PSK}, "wifi_ssid: must be at most 32 bytes"),
        ({"wifi_ssid": "depot", "wifi_psk": "1234567"}, "wifi_psk: must be 8-63 characters"),
        ({"ssh_key": "AAAA tech"}, "ssh_key: is not an OpenSSH public key"),
        (
            {"timezone": "Madrid time"},
            "timezone: 'Madrid time' is not a zone name like Europe/Madrid",
        ),
        ({"wifi_password": PSK}, "wifi_password: unknown field"),
        ({"site": 7}, "site: must be a string in quotes (got 7)"),
    ],
)
def test_a_wrong_field_is_named_in_one_line_without_secrets(
    changes: dict[str, Any], line: str
) -> None:
    fields = {key: value for key, value in {**GOOD, **changes}.items() if value is not None}
    with pytest.raises(ProvisionFileError) as caught:
        parse_provision_file(toml(fields), "boot.toml")
    assert str(caught.value) == f"boot.toml: {line}"
    for secret in (TOKEN, PSK, "tiny-token", "1234567", "12345678901234567"):
        assert secret not in str(caught.value)


def test_a_file_that_is_not_toml_is_refused() -> None:
    with pytest.raises(ProvisionFileError, match=r"^boot.toml: not valid TOML: "):
        parse_provision_file(b"kiosk_id = \n", "boot.toml")
    with pytest.raises(ProvisionFileError, match="not UTF-8"):
        parse_provision_file(b"\xff\xfe", "boot.toml")


def test_values_are_trimmed_like_scripts_flash_does() -> None:
    assert request(kiosk_id="  kiosk-0042 ", site=" North gate\n").site == "North gate"


# -- the plan ------------------------------------------------------------------------------


def journal(*done: Step, token: str = TOKEN, kiosk_id: str = "kiosk-0042") -> Journal:
    return Journal(
        kiosk_id=kiosk_id,
        token_id=request(token=token).token_id,
        cloud_url=GOOD["cloud_url"],
        done=done,
        public_key="pub" if Step.KEYS in done else None,
        box_public_key="box" if Step.KEYS in done else None,
    )


def test_a_first_run_does_every_step_in_order() -> None:
    todo = plan(request(), None, "boot.toml")
    assert todo.steps == STEPS == tuple(Step)
    assert todo.journal.done == () and not todo.resumed
    assert TOKEN not in todo.journal.model_dump_json()


def test_a_run_cut_short_resumes_with_the_steps_left() -> None:
    todo = plan(request(), journal(Step.KEYS, Step.FIRST_BOOT), "boot.toml")
    assert todo.steps == (Step.REGISTER, Step.CONFIG, Step.CLEANUP)
    assert todo.resumed and todo.journal.public_key == "pub"


def test_once_done_there_is_nothing_to_do() -> None:
    assert plan(None, journal(*STEPS), "boot.toml").nothing_to_do
    # the token was removed but the power went before the journal said so
    assert plan(None, journal(*STEPS[:-1]), "boot.toml").steps == (Step.CLEANUP,)
    # the file came back: it holds a spent token, so it goes again
    assert plan(request(), journal(*STEPS), "boot.toml").steps == (Step.CLEANUP,)


def test_without_the_file_an_unfinished_run_says_what_is_missing() -> None:
    with pytest.raises(ProvisionStateError, match="never provisioned"):
        plan(None, None, "boot.toml")
    with pytest.raises(ProvisionStateError, match=r"stopped before it finished \(done: keys\)"):
        plan(None, journal(Step.KEYS), "boot.toml")


def test_a_new_token_registers_again_with_the_keys_made_before() -> None:
    todo = plan(request(token="kpt_another-token-123456"), journal(*STEPS), "boot.toml")
    assert todo.steps == (Step.FIRST_BOOT, Step.REGISTER, Step.CONFIG, Step.CLEANUP)
    assert todo.journal.done == (Step.KEYS,) and todo.journal.public_key == "pub"
    assert todo.journal.registration is None


def test_a_registered_kiosk_keeps_its_id() -> None:
    with pytest.raises(ProvisionStateError, match="already provisioned as kiosk-0042"):
        plan(request(kiosk_id="kiosk-0043"), journal(*STEPS), "boot.toml")
    # not registered yet (say the id was mistyped): the corrected file starts over
    todo = plan(request(kiosk_id="kiosk-0043"), journal(Step.KEYS), "boot.toml")
    assert todo.journal.kiosk_id == "kiosk-0043" and todo.steps[0] is Step.FIRST_BOOT


def test_the_journal_records_steps_once_in_their_order() -> None:
    done = journal().record(Step.CONFIG).record(Step.KEYS).record(Step.CONFIG)
    assert done.done == (Step.KEYS, Step.CONFIG)


# -- settings and first-boot files ------------------------------------------------------------


REGISTERED = Registration(
    kiosk_id="kiosk-0042", public_key="pub", site="North gate", roster_public_key=ROSTER_KEY
)


def test_the_settings_keep_what_was_there_and_add_the_kiosk() -> None:
    base = {"board": {"url": "socket://127.0.0.1:7000"}, "kiosk": {"mode": "boarding"}}

    values = render_config(base, request(), Path("/var/lib/kiosk"), REGISTERED)

    assert values == {
        "board": {"url": "socket://127.0.0.1:7000"},
        "kiosk": {
            "id": "kiosk-0042",
            "site": "North gate",
            "state_dir": "/var/lib/kiosk",
            "mode": "boarding",
        },
        "sync": {"cloud_url": "https://cloud.example"},
        "roster": {"cloud_roster_key": ROSTER_KEY},
    }
    settings = check_config(values, "kiosk.toml")
    assert settings.roster.cloud_roster_key == ROSTER_KEY
    assert base == {"board": {"url": "socket://127.0.0.1:7000"}, "kiosk": {"mode": "boarding"}}


def test_a_cloud_without_a_roster_pins_nothing() -> None:
    base = {"roster": {"cloud_roster_key": ROSTER_KEY}}
    bare = REGISTERED.model_copy(update={"roster_public_key": None})
    assert "roster" not in render_config(base, request(), Path("/s"), bare)


def test_bad_settings_already_there_are_named() -> None:
    values = render_config({"camera": {"fps": "lots"}}, request(), Path("/s"))
    with pytest.raises(ConfigError, match=r"^kiosk.toml: camera.fps: "):
        check_config(values, "kiosk.toml")
    with pytest.raises(ConfigError, match=r"\[sync\] must be a table"):
        render_config({"sync": 3}, request(), Path("/s"))


def test_first_boot_files_for_what_the_file_asks() -> None:
    assert first_boot_files(request()) == ()
    files = first_boot_files(
        request(wifi_ssid="depot\\net", wifi_psk=" " + PSK, timezone="Europe/Madrid")
    )
    by_name = {item.name: item for item in files}
    assert set(by_name) == {"wifi.nmconnection", "timezone"}
    wifi = by_name["wifi.nmconnection"]
    assert wifi.secret and not by_name["timezone"].secret
    assert "ssid=depot\\\\net\n" in wifi.text and "key-mgmt=wpa-psk\n" in wifi.text
    assert f"psk={PSK}\n" in wifi.text  # trimmed, like every value
    assert PSK not in repr(wifi)
    assert by_name["timezone"].text == "Europe/Madrid\n"
    again = first_boot_files(request(wifi_ssid="depot\\net", wifi_psk=PSK))
    assert again[0].text == wifi.text, "the same network gets the same connection uuid"


def test_a_refused_token_says_what_to_do() -> None:
    said = "https://cloud.example/v1/provision: 401 bad_token: this provisioning token was already used"
    assert refusal(401, said, "kiosk-0042") == (
        f"the cloud refused the provisioning token ({said}); issue a new one "
        "(kiosk-cloud issue-token --kiosk-id kiosk-0042)"
    )
    assert "a token for kiosk-0042" in (refusal(403, "403 wrong_kiosk", "kiosk-0042") or "")
    assert "issue a token bound to it" in (refusal(409, "409 kiosk_exists", "kiosk-0042") or "")
    assert refusal(422, "422 invalid_request", "kiosk-0042") is None
