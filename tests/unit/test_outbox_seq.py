"""The cloud's words for a seq conflict, read back by the kiosk (``cloud_sync.outbox_seq``)."""

from __future__ import annotations

from cloud_sync.outbox_seq import SeqConflict, conflict_reason, parse_conflict


def test_a_conflict_reason_reads_back_with_the_clouds_highest_seq() -> None:
    reason = conflict_reason(7, "kiosk-a", "01ARZ3NDEKTSV4RRFFQ69G5FAV", 42)
    assert parse_conflict(reason) == SeqConflict(7, 42)


def test_an_older_clouds_reason_is_a_conflict_without_a_highest_seq() -> None:
    reason = "seq: 2 of kiosk kiosk-a is already stored as event 01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert parse_conflict(reason) == SeqConflict(2, None)


def test_other_reasons_are_not_conflicts() -> None:
    assert parse_conflict("id: 01ARZ is already stored with other content (kiosk a, seq 3)") is None
    assert parse_conflict("payload.slot: Input should be a valid integer") is None
    assert parse_conflict("") is None
