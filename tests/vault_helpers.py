"""A small cloud for roster tests: its roster key, a data key, and deltas for one kiosk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.roster_wire import (
    RiderRecord,
    Template,
    Upsert,
    build_current,
    build_delta,
    sign_current,
    sign_delta,
)
from cloud_sync.sealing import new_data_key
from edge.vault.keys import DeviceKeys, device_keys
from edge.vault.store import RosterStore

MODEL = "dlib_resnet_v1"


def template(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, 128).astype(np.float32)


def record(name: str, seed: int, model: str = MODEL) -> RiderRecord:
    return RiderRecord(display_name=name, templates=(Template(model, template(seed)),))


@dataclass
class Cloud:
    kiosk_id: str
    keys: DeviceKeys
    roster_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    data_key: bytes = field(default_factory=new_data_key)

    def delta(
        self,
        from_version: int,
        to_version: int,
        upserts: list[Upsert] | None = None,
        deletions: list[str] | None = None,
        full: bool = False,
        model: str = MODEL,
        kiosk_id: str | None = None,
        nonce: str | None = None,
        auto_set: list[str] | None = None,
    ) -> bytes:
        body = build_delta(
            kiosk_id=kiosk_id or self.kiosk_id,
            recipient=self.keys.box.public_key(),
            data_key=self.data_key,
            model=model,
            from_version=from_version,
            to_version=to_version,
            upserts=upserts or [],
            deletions=deletions or [],
            full=full,
            nonce=nonce,
        )
        if auto_set is not None:  # the kiosk's automatic set, as the cloud adds it
            body = body.model_copy(update={"auto_set": tuple(auto_set)})
        return sign_delta(body, self.roster_key)

    def current(self, version: int, nonce: str, kiosk_id: str | None = None) -> bytes:
        """The signed statement that ``version`` is current, for one request's nonce."""
        body = build_current(kiosk_id or self.kiosk_id, version, nonce)
        return sign_current(body, self.roster_key)


def open_store(folder: Path, cloud: Cloud | None = None, kiosk_id: str = "kiosk-1") -> RosterStore:
    keys = device_keys(folder / "keys", create=True)
    public = cloud.roster_key.public_key() if cloud else None
    return RosterStore(folder / "roster.sqlite", keys, kiosk_id, MODEL, public)
