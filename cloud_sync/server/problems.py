"""The one exception the API's handlers raise to answer with a 4xx/5xx and a reason.

Every error answer has the ``ErrorBody`` shape (``cloud_sync.events``): a stable ``error``
code, a plain ``reason``, the ``request_id``, and for batches the ``rejected`` events.
"""

from __future__ import annotations

from cloud_sync.events import Rejection


class Problem(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        reason: str,
        rejected: list[Rejection] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {reason}")
        self.status = status
        self.code = code
        self.reason = reason
        self.rejected = rejected or []
        self.headers = headers or {}
