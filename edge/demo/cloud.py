"""The cloud side of ``kiosk demo``: the real cloud API on loopback, and the operator.

``LocalCloud`` runs ``cloud_sync.server`` (the same app ``kiosk-cloud serve`` runs) in a
thread on a free loopback port with a SQLite database and roster keys in a folder of the
demo's state, and acts as the operator through the admin API: it registers the kiosk,
adds and deletes riders (templates made on this machine, sealed by the cloud before they
are stored) and reads back the events and rentals that reached it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import SecretStr

from cloud_sync.private_files import private_dir
from edge.errors import EdgeError

#: The consent text the demo's sample riders "agree" to (a real fleet adds its own).
DEMO_CONSENT_TEXT = {
    "version": "demo-1",
    "text": "Demo only: sample riders' face templates are kept in this demo's roster.",
}


class LocalCloud:
    """The cloud API serving one folder's database, with its admin token in hand."""

    def __init__(self, url: str, token: str, roster_key: str, database: Path) -> None:
        self.url = url.rstrip("/")
        self.roster_key = roster_key
        self.database = database
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EdgeError(f"the demo's cloud API did not answer {method} {path}: {exc}") from None
        if response.status_code >= 400:
            raise EdgeError(
                f"the demo's cloud API refused {method} {path}: "
                f"{response.status_code} {response.text[:200]}"
            )
        return response.json()

    def register_kiosk(self, kiosk_id: str, public_key: str, box_public_key: str) -> None:
        body = {"kiosk_id": kiosk_id, "public_key": public_key, "box_public_key": box_public_key}
        self._call("POST", "/v1/admin/kiosks", json={**body, "site": "demo"})

    def add_rider(
        self, person_id: str, name: str, templates: Sequence[npt.NDArray[np.float64]], model: str
    ) -> int:
        """Add (or replace) a rider with a consent record to the demo's consent text;
        returns the roster version that holds them."""
        self._call("POST", "/v1/admin/consent-texts", json=DEMO_CONSENT_TEXT)  # once: no change
        body = {
            "person_id": person_id,
            "display_name": name,
            "templates": [{"model": model, "vector": [float(x) for x in t]} for t in templates],
            "replace": True,
            "consent": {
                "version": DEMO_CONSENT_TEXT["version"],
                "given_at": datetime.now(UTC).isoformat(),
                "channel": "desk",
                "taken_by": "kiosk demo",
            },
        }
        return int(self._call("POST", "/v1/admin/riders", json=body)["roster_version"])

    def delete_rider(self, person_id: str) -> int:
        return int(self._call("DELETE", f"/v1/admin/riders/{person_id}")["roster_version"])

    def events(self, kiosk_id: str) -> list[dict[str, Any]]:
        """Every event of ``kiosk_id`` the cloud stored, in ``seq`` order, payloads parsed."""
        found: list[dict[str, Any]] = []
        while True:
            page: list[dict[str, Any]] = self._call(
                "GET",
                "/v1/admin/events",
                params={"kiosk_id": kiosk_id, "after_seq": found[-1]["seq"] if found else 0,
                        "limit": 1000},
            )  # fmt: skip
            for event in page:
                if isinstance(event.get("payload"), str):
                    event["payload"] = json.loads(event["payload"])
            found.extend(page)
            if len(page) < 1000:
                return found

    def set_terms(self, person_id: str, **changes: Any) -> dict[str, Any]:
        """Change a rider's entitlements (``may_rent=False`` blocks them)."""
        found: dict[str, Any] = self._call("PATCH", f"/v1/admin/riders/{person_id}", json=changes)
        return found

    def roster_version(self) -> int:
        return int(self._call("GET", "/v1/admin/roster")["version"])

    def rentals(self, status: str = "all") -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call(
            "GET", "/v1/admin/rentals", params={"status": status, "limit": 1000}
        )
        return found

    def close(self) -> None:
        self._http.close()


@contextmanager
def local_cloud(folder: Path, **settings_: Any) -> Iterator[LocalCloud]:
    """Serve the cloud API from ``folder`` on a free loopback port while the block runs;
    ``settings_`` set cloud settings (the fleet demo compresses rental times)."""
    from cloud_sync.server.app import create_app
    from cloud_sync.server.config import CloudSettings
    from cloud_sync.server.roster_keys import RosterKeyFiles
    from edge.runtime.serving import serve_in_thread

    private_dir(folder)
    token = secrets.token_urlsafe(24)
    database = folder / "cloud.sqlite"
    settings = CloudSettings(
        database_url=f"sqlite:///{database}",
        admin_token=SecretStr(token),
        log_level="warning",
        **settings_,
    )
    paths = settings.roster_key_paths
    assert paths is not None  # always set beside a SQLite database
    keys = RosterKeyFiles(*paths)
    keys.init()
    with ExitStack() as stack:
        url = stack.enter_context(
            serve_in_thread(create_app(settings), "127.0.0.1", 0, "demo cloud API")
        )
        cloud = LocalCloud(url, token, keys.public_key, database)
        stack.callback(cloud.close)
        yield cloud
