"""Running the installed commands as a person would: a subprocess, its output, its exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    program: str = "kiosk",
) -> subprocess.CompletedProcess[str]:
    """Run ``kiosk`` (or ``kiosk-cloud``) from this virtualenv with a clean KIOSK_* environment."""
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("KIOSK_")}
    full_env.pop("CREDENTIALS_DIRECTORY", None)
    full_env.update(env or {})
    return subprocess.run(
        [str(BIN / program), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


#: ``kiosk-cloud riders add``'s consent record, to the text ``consent_text`` makes known.
CONSENT_ARGS = ("--consent", "test-1", "--consent-by", "test-operator")


def consent_text(folder: Path) -> tuple[str, ...]:
    """The arguments of ``kiosk-cloud consent-texts add`` for the tests' consent text
    (written into ``folder``)."""
    path = folder / "consent.txt"
    path.write_text("I agree to my face templates being kept.\n", encoding="utf-8")
    return ("consent-texts", "add", "test-1", "--file", str(path))
