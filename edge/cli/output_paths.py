"""A file a command writes its report to (``--output``, ``--json``) must not be one of the
kiosk's own: an existing file in the state or key folder, or any SQLite database (an
outbox or a roster copied elsewhere), is refused before anything is written, so a slip
of the tab key cannot overwrite the outbox with its own export."""

from __future__ import annotations

from pathlib import Path

from cloud_sync.errors import InputError

SQLITE_MAGIC = b"SQLite format 3\x00"


def check_output(path: Path, keep: tuple[Path, ...], option: str) -> None:
    """``InputError`` when writing ``path`` would overwrite a file the kiosk keeps: one in a
    folder of ``keep`` (the state and key folders) or an SQLite database."""
    target = path.resolve()
    if not target.exists():
        return
    if target.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    for folder in keep:
        folder = folder.resolve()
        if target.is_relative_to(folder):
            raise InputError(
                f"{option} {path}: is one of the kiosk's own files (in {folder}); nothing was "
                "written: choose a new file elsewhere"
            )
    if target.is_file():
        with target.open("rb") as handle:
            if handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                raise InputError(
                    f"{option} {path}: is an SQLite database (an outbox or a roster?); nothing "
                    "was written: choose a new file"
                )


def check_elsewhere(path: Path, keep: tuple[Path, ...], option: str, holds: str) -> None:
    """``InputError`` when ``path``, a file holding ``holds`` in clear (say the photos'
    encodings), would be inside a folder of ``keep`` (the state and key folders, whose
    contents are the kiosk's and sealed), whether it exists yet or not; then
    ``check_output``'s rules."""
    target = path.resolve()
    for folder in keep:
        folder = folder.resolve()
        if target.is_relative_to(folder):
            raise InputError(
                f"{option} {path}: would keep {holds} in clear inside the kiosk's own folder "
                f"({folder}); nothing was written: choose a file elsewhere, e.g. under /tmp"
            )
    check_output(path, keep, option)
