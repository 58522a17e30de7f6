"""Sealing rows and wrapping data keys."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloud_sync.errors import IntegrityError
from cloud_sync.roster_wire import Entitlements, RiderRecord, Template
from cloud_sync.sealing import new_data_key, open_sealed, row_aad, seal, unwrap_key, wrap_key
from tests.vault_helpers import template


def test_seal_round_trip_and_fresh_nonce() -> None:
    key = new_data_key()
    aad = row_aad("p1", 3, "00" * 8)
    first, second = seal(key, b"hello", aad), seal(key, b"hello", aad)
    assert first != second
    assert open_sealed(key, first, aad) == b"hello"


@pytest.mark.parametrize("position", [0, 12, 20, -1])
def test_any_flipped_byte_is_refused(position: int) -> None:
    key = new_data_key()
    aad = row_aad("p1", 1, "ab" * 8)
    blob = bytearray(seal(key, b"template bytes", aad))
    blob[position] ^= 0x01
    with pytest.raises(IntegrityError):
        open_sealed(key, bytes(blob), aad)


def test_a_row_moved_to_another_id_or_version_does_not_open() -> None:
    key = new_data_key()
    blob = seal(key, b"x", row_aad("p1", 1, "ab" * 8))
    for aad in (row_aad("p2", 1, "ab" * 8), row_aad("p1", 2, "ab" * 8), row_aad("p1", 1, "cd" * 8)):
        with pytest.raises(IntegrityError):
            open_sealed(key, blob, aad)


def test_truncated_blob() -> None:
    with pytest.raises(IntegrityError, match="truncated"):
        open_sealed(new_data_key(), b"short", b"")


def test_wrapped_key_opens_only_for_its_kiosk() -> None:
    mine, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    data_key = new_data_key()
    wrapped = wrap_key(data_key, mine.public_key())
    assert unwrap_key(wrapped, mine) == data_key
    with pytest.raises(IntegrityError, match="wrapped for another kiosk"):
        unwrap_key(wrapped, other)


def test_rider_record_round_trip_keeps_templates_exactly() -> None:
    record = RiderRecord(
        display_name="Asha Ōkubo",
        templates=(
            Template("dlib_resnet_v1", template(1)),
            Template("dlib_resnet_v1", template(2)),
        ),
        entitlements=Entitlements(may_rent=False, max_open_rentals=2, boarding_allowed=True),
        claim_hash="salt$hash",
    )
    again = RiderRecord.from_bytes(record.to_bytes())
    assert again.display_name == record.display_name
    assert again.entitlements == record.entitlements
    assert again.claim_hash == "salt$hash"
    for before, after in zip(record.templates, again.templates, strict=True):
        assert (before.vector == after.vector).all()
    assert "Asha" not in repr(record)
