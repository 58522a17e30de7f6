"""Bodies of the cloud API's administration, provisioning and health routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud_sync.events import KIOSK_ID_PATTERN


class KioskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kiosk_id: str = Field(pattern=KIOSK_ID_PATTERN)
    public_key: str = Field(min_length=40, max_length=64, description="base64 Ed25519 key")
    site: str = Field(default="", max_length=200)


class KioskOut(BaseModel):
    kiosk_id: str
    public_key: str
    site: str
    disabled: bool
    created_at: str


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kiosk_id: str | None = Field(default=None, pattern=KIOSK_ID_PATTERN)
    site: str = Field(default="", max_length=200)
    ttl_s: float | None = Field(default=None, ge=60, le=30 * 86400)


class TokenOut(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored")
    expires_at: str
    kiosk_id: str | None


class ProvisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=8, max_length=100)
    kiosk_id: str = Field(pattern=KIOSK_ID_PATTERN)
    public_key: str = Field(min_length=40, max_length=64)
    site: str | None = Field(default=None, max_length=200)


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    schema_version: int
