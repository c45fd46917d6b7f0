"""Tokens and roles: who may join as a worker, who may submit, who may manage tokens.

Only SHA-256 hashes of tokens are stored (tokens are 256-bit random strings, so a plain hash is
enough); every check compares against each stored hash with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from rvidia.master.store import Store

ROLES = ("admin", "user", "worker")
SESSION_SECONDS = 30 * 24 * 3600  # a dashboard sign-in lasts this long, or until sign-out or revocation
# What each role may do: "submit" covers submit/view/cancel, "work" joining as a worker.
_GRANTS = {"admin": {"admin", "submit", "work"}, "user": {"submit"}, "worker": {"work"}}


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def may(self, action: str) -> bool:
        return action in _GRANTS.get(self.role, set())


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_second: list[object] = [None, ""]  # the last whole second formatted, and its text


def now_iso() -> str:
    """UTC now as ``2026-12-04T17:41:06.079Z``. Called several times per chunk, so the text of the
    current second is kept and only the milliseconds are formatted each time."""
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second[0], _second[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


class Auth:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._reload()
        self.sessions: dict[str, tuple[Principal, float]] = {}  # SHA-256 of a cookie -> who, until when
        self._load_sessions()

    def _reload(self) -> None:
        self._entries = [(t["hash"], Principal(t["name"], t["role"])) for t in self.store.tokens()]

    def ensure_admin(self, data_dir: Path, given: str | None) -> str | None:
        """Make sure an admin token exists; return a newly created plain token to print once."""
        if given:
            if self.check(given) is None:
                self.store.add_token(hash_token(given), "admin", self._free_name("admin"), now_iso())
                self._reload()
            _write_token_file(data_dir, given)
            return None
        if any(p.role == "admin" for _, p in self._entries):
            return None
        token = secrets.token_urlsafe(32)
        self.store.add_token(hash_token(token), "admin", "admin", now_iso())
        self._reload()
        _write_token_file(data_dir, token)
        return token

    def _free_name(self, base: str) -> str:
        taken = {t["name"] for t in self.store.tokens(include_revoked=True)}
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    def check(self, token: str | None) -> Principal | None:
        """The holder of ``token``, or None; constant time in the token's value."""
        if not token:
            return None
        digest = hash_token(token)
        found: Principal | None = None
        for stored, principal in self._entries:
            if hmac.compare_digest(stored, digest):
                found = principal
        return found

    def create(self, role: str, name: str | None) -> tuple[str, str]:
        if role not in ("user", "worker", "admin"):
            raise ValueError(f"unknown role {role!r}; use worker or user")
        name = name or self._free_name(role)
        if any(t["name"] == name for t in self.store.tokens(include_revoked=True)):
            raise ValueError(f"a token named {name!r} exists already")
        token = secrets.token_urlsafe(32)
        self.store.add_token(hash_token(token), role, name, now_iso())
        self._reload()
        return name, token

    def revoke(self, name: str) -> bool:
        ok = self.store.revoke_token(name)
        self._reload()
        gone = [h for h, (p, _) in self.sessions.items() if p.name == name]
        for h in gone:
            del self.sessions[h]
        if gone:
            self.store.delete_sessions(gone)
        return ok

    def list(self) -> list[dict[str, object]]:
        return [{k: t[k] for k in ("name", "role", "created_at")} for t in self.store.tokens()]

    # Dashboard sessions: the cookie is a random 256-bit string; only its hash is kept (in memory and
    # in the database, so a restarted master keeps them). Lookups go by hash, so their timing tells
    # nothing about any cookie.

    def _load_sessions(self) -> None:
        by_name = {p.name: p for _, p in self._entries}
        now = time.time()
        stale = []
        for hash_, name, expires in self.store.sessions():
            if expires > now and name in by_name:
                self.sessions[hash_] = (by_name[name], expires)
            else:
                stale.append(hash_)
        if stale:
            self.store.delete_sessions(stale)

    def new_session(self, principal: Principal) -> str:
        sid = secrets.token_urlsafe(32)
        expires = time.time() + SESSION_SECONDS
        self.sessions[hash_token(sid)] = (principal, expires)
        self.store.add_session(hash_token(sid), principal.name, expires)
        return sid

    def session(self, sid: str | None) -> Principal | None:
        if not sid:
            return None
        found = self.sessions.get(hash_token(sid))
        if found is None:
            return None
        if found[1] < time.time():
            self.end_session(sid)
            return None
        return found[0]

    def end_session(self, sid: str | None) -> None:
        """Sign-out: the cookie no longer signs anyone in, here or after a restart."""
        if sid and self.sessions.pop(hash_token(sid), None) is not None:
            self.store.delete_sessions([hash_token(sid)])


def _write_token_file(data_dir: Path, token: str) -> None:
    path = data_dir / "token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
