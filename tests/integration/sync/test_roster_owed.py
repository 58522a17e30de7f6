"""The roster's owed events (``cloud_sync.roster_owed``) on a real outbox: an event the
outbox took before the store crossed it off (a cut in between) is not recorded twice."""

from __future__ import annotations

import time
from pathlib import Path

from cloud_sync.outbox import Outbox
from cloud_sync.roster_owed import OwedEvent, record_owed


class Store:
    """The roster store's side: what it owes, and what it was told is settled."""

    def __init__(self, owed: list[OwedEvent]) -> None:
        self.owed = owed

    def owed_events(self) -> list[OwedEvent]:
        return list(self.owed)

    def settle_owed(self, ids: set[str]) -> None:
        self.owed = [e for e in self.owed if e.id not in ids]


def test_an_owed_event_the_outbox_took_before_the_cut_is_settled_not_appended_again(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", "kiosk-o")
    try:
        at = time.time()
        receipt = OwedEvent("a", "roster.erased", {"person_id": "bob", "roster_version": 3}, at)
        other = OwedEvent("b", "roster.erased", {"person_id": "cyd", "roster_version": 3}, at)
        outbox.append("roster.erased", person_id="bob", roster_version=3)  # then the cut
        store = Store([receipt, other])
        assert record_owed(store, outbox) == 1
        assert store.owed == []
        payloads = [e.payload.model_dump() for e in outbox.events()]
        assert payloads == [
            {"person_id": "bob", "roster_version": 3},
            {"person_id": "cyd", "roster_version": 3},
        ]
    finally:
        outbox.close()
