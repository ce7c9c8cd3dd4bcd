"""Sessions, CSRF tokens and the login rate limit (in memory; a restart logs everyone out).

Invariants:
- Every browser gets a session on its first request (anonymous: ``user`` None), so the login
  form itself carries a CSRF token. A login *replaces* the session (new id): a session id
  planted before login is worth nothing after it (no fixation).
- A state-changing request is accepted only with the session's CSRF token (form field or
  ``X-CSRF-Token`` header), compared in constant time.
- At most ``max_sessions`` sessions; the least recently used goes first (a flood of cookieless
  requests cannot grow memory without bound).
- Login failures are limited per client address and per user name: ``max_failures`` in
  ``window_s``; further attempts are refused (HTTP 429) without checking the password.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["LoginLimiter", "Session", "Sessions", "clean"]


def clean(text: str, limit: int = 80) -> str:
    """Text from a browser made safe for one log line (control characters escaped)."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return out + ("…" if len(text) > limit else "")


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    expires: float
    user: str | None = None
    role: str | None = None  # "viewer" | "operator" once logged in
    lang: str | None = None  # chosen with ?lang=

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


@dataclass(slots=True)
class Sessions:
    ttl_s: float
    max_sessions: int = 2000
    clock: Callable[[], float] = time.monotonic
    _by_id: OrderedDict[str, Session] = field(default_factory=OrderedDict)

    def get(self, sid: str | None) -> Session | None:
        if sid is None:
            return None
        s = self._by_id.get(sid)
        if s is None:
            return None
        if s.expires < self.clock():
            del self._by_id[sid]
            return None
        self._by_id.move_to_end(sid)
        return s

    def new(self, *, user: str | None = None, role: str | None = None) -> Session:
        s = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires=self.clock() + self.ttl_s,
            user=user,
            role=role,
        )
        self._by_id[s.id] = s
        while len(self._by_id) > self.max_sessions:
            self._by_id.popitem(last=False)
        return s

    def drop(self, sid: str) -> None:
        self._by_id.pop(sid, None)

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(session.csrf, token)


@dataclass(slots=True)
class LoginLimiter:
    max_failures: int = 5
    window_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _fails: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        cutoff = self.clock() - self.window_s
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> bool:
        return any(len(self._recent(k)) >= self.max_failures for k in keys)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for k in keys:
            self._recent(k).append(now)
        if len(self._fails) > 10_000:  # forget quiet keys rather than grow
            for k in [k for k, q in self._fails.items() if not q]:
                del self._fails[k]

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self._fails.pop(k, None)
