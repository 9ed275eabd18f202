"""Optional API keys, and the owner every session and job belongs to.

With `VSOD_API_KEYS` empty the service is open and everything belongs to the owner "". With keys
set, each request names one (`X-API-Key`, or `?api_key=` on the WebSocket, which browsers cannot
give headers); 401 when it names none, 403 when the key is unknown. The owner of what a key makes
is `owner_id(key)`, a SHA-256 digest prefix: the key itself is never stored, logged or put in a
Redis key. Another key's sessions and jobs are invisible (404), as if they did not exist.

Keys are high-entropy tokens, not passwords, so an unsalted hash is enough, and replicas agree on
it without sharing a secret. Looking a presented key up by its digest keeps timing from telling
anything about the stored keys.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

HEADER = "X-API-Key"
QUERY = "api_key"


class AuthError(Exception):
    """A request without a usable key: `status` 401 (none given) or 403 (unknown)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def owner_id(key: str) -> str:
    """The stored form of a key: 32 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class ApiKeys:
    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._owners = frozenset(owner_id(key) for key in keys if key)

    @classmethod
    def from_setting(cls, value: str) -> ApiKeys:
        """`VSOD_API_KEYS`: keys separated by commas or whitespace."""
        return cls(part for part in re.split(r"[,\s]+", value) if part)

    @property
    def enabled(self) -> bool:
        return bool(self._owners)

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, key: str | None) -> str:
        """The owner id the presented key stands for ("" when keys are off); AuthError when refused."""
        if not self.enabled:
            return ""
        if not key:
            raise AuthError(401, "unauthorized", f"an API key is required: send it in the {HEADER} header"
                                                 f" (or the {QUERY} query parameter on the WebSocket)")
        owner = owner_id(key)
        if owner not in self._owners:
            raise AuthError(403, "forbidden", "the API key is not valid")
        return owner


def scoped(owner: str, name: str) -> str:
    """The cache id of a client-named session: owners live in separate namespaces, so two keys may both
    use "camera-1" and neither can reach the other's. Without keys (owner "") the id is the name itself.
    Session names cannot contain ':' (see `sessions.valid_session_id`), so this is unambiguous."""
    return f"{owner}:{name}" if owner else name
