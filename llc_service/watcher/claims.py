"""Claims: at most one watcher measures a checkpoint at a time.

Before measuring, a watcher claims the measurement's identity (a :class:`~llc_service.sinks.store.ResultKey`:
run, config, checkpoint step or folder, fingerprint, data) by writing a small JSON object next to the results
(the path comes from :class:`~llc_service.sinks.store.ResultsStore`)::

    RESULTS/claims/<run_id>/<config_hash>/<checkpoint>-<fingerprint>-data-<data>.json
    {"run_id", "config_hash", "fingerprint", "checkpoint", "data", "owner", "hostname", "pid", "created_at",
     "lease_expires_at", "attempt", "released_at", "nonce"}

Living in RESULTS (not in a database or in Ray) means every watcher that can write results can coordinate,
whatever cluster it runs on, and the claim state is inspectable with ``ls`` / ``aws s3 ls``.

Lease semantics. A claim is *live* until ``lease_expires_at`` (wall clock, UTC) or until its owner releases it.
A live claim belongs to its owner; an expired or released one is free and the next ``try_claim`` takes it over
(``attempt`` + 1), so a watcher that died mid-measurement costs at most one lease. A long measurement must call
``renew`` well within the lease; ``renew`` raises ``ClaimLost`` if someone took the claim over meanwhile, and the
worker should then stop. Clocks of the machines must agree to well within ``lease_seconds``.

Every change is a compare-and-swap on the claim file (see ``llc_service.watcher.cas``): an exclusive create,
or a replace conditional on the version that was read. Hence at most one live claim per key at any instant;
two stealers of one expired claim cannot both win, and a late ``release``/``renew`` by a former owner cannot
clobber its successor's claim. The result itself is exactly-once because result files are named by the
measurement's identity (a duplicate measurement after a lost lease overwrites, never adds a row).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from llc_service.sinks.store import CLAIMS, ResultKey, ResultsStore
from llc_service.watcher.cas import Cas, cas_for

log = logging.getLogger(__name__)

class ClaimLost(RuntimeError):
    """The claim is no longer ours (its lease expired and another owner took it over, or it was released)."""


ClaimKey = ResultKey
"""What one claim guards: the identity of one measurement (``key.relpath()`` is its claim file)."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _epoch(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class Claim:
    """One claim as stored. Times are epoch seconds here and ISO-8601 UTC in the file."""

    key: ClaimKey
    owner: str
    hostname: str
    pid: int
    created_at: float
    lease_expires_at: float
    attempt: int = 1
    released_at: float | None = None
    nonce: str = ""
    """Random per write: two writes never have equal bytes, so content-hash versions cannot repeat (no ABA)."""
    token: str | None = dataclasses.field(default=None, compare=False)
    """Version of the stored object this was read from or written as (ETag on S3); needed to change it."""

    def is_live(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.released_at is None and now < self.lease_expires_at

    def to_bytes(self) -> bytes:
        doc = {"run_id": self.key.run_id, "config_hash": self.key.config_hash, "fingerprint": self.key.fingerprint,
               "checkpoint": self.key.checkpoint, "data": self.key.data, "owner": self.owner,
               "hostname": self.hostname, "pid": self.pid,
               "created_at": _iso(self.created_at),
               "lease_expires_at": _iso(self.lease_expires_at), "attempt": self.attempt,
               "released_at": None if self.released_at is None else _iso(self.released_at), "nonce": self.nonce}
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes, token: str | None = None) -> Claim:
        doc = json.loads(data)
        key = ClaimKey(doc["run_id"], doc["config_hash"], doc["fingerprint"], doc.get("checkpoint", ""),
                       doc.get("data", ""))
        return cls(key=key, owner=doc["owner"],
                   hostname=doc.get("hostname", ""), pid=int(doc.get("pid", -1)),
                   created_at=_epoch(doc["created_at"]), lease_expires_at=_epoch(doc["lease_expires_at"]),
                   attempt=int(doc.get("attempt", 1)), released_at=_epoch(doc.get("released_at")),
                   nonce=doc.get("nonce", ""), token=token)


def default_owner() -> str:
    """Unique per ClaimStore: host and pid for humans, random suffix so two stores in one process differ."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ClaimStore:
    """Claims under ``RESULTS/claims`` for one owner (one watcher). Thread-safe; every call reads fresh."""

    def __init__(self, results_uri: str, storage_options: dict | None = None, owner: str | None = None,
                 lease_seconds: float = 600.0, clock: Callable[[], float] = time.time):
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0 (got {lease_seconds!r})")
        self.results_uri, self.storage_options = str(results_uri), dict(storage_options or {})
        self.owner = owner or default_owner()
        self.lease_seconds, self.clock = float(lease_seconds), clock
        self.results = ResultsStore(self.results_uri, self.storage_options)
        self.fs, self.root = self.results.open()
        self.cas: Cas = cas_for(self.fs, f"{self.root}/{CLAIMS}")

    def path(self, key: ClaimKey) -> str:
        return self.results.path(CLAIMS, key, self.root)

    def _new(self, key: ClaimKey, attempt: int, created_at: float | None = None) -> Claim:
        now = self.clock()
        return Claim(key=key, owner=self.owner, hostname=socket.gethostname(), pid=os.getpid(),
                     created_at=now if created_at is None else created_at, lease_expires_at=now + self.lease_seconds,
                     attempt=attempt, nonce=uuid.uuid4().hex)

    def read(self, key: ClaimKey) -> Claim | None:
        """The stored claim (live or not), or None if the checkpoint was never claimed.

        A file that does not parse is reported as an expired claim of owner ``"<corrupt>"`` so that it can be
        taken over rather than blocking its checkpoint forever.
        """
        found = self.cas.read(self.path(key))
        if found is None:
            return None
        data, token = found
        try:
            return Claim.from_bytes(data, token)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("claim file %s is unreadable (%s); treating it as expired", self.path(key), exc)
            return Claim(key=key, owner="<corrupt>", hostname="", pid=-1, created_at=0.0, lease_expires_at=0.0,
                         token=token)

    def try_claim(self, key: ClaimKey) -> Claim | None:
        """Claim ``key`` for this owner: the new Claim, or None if another owner holds a live claim.

        Not re-entrant: a live claim of this same owner also gives None (one owner = one worker; keep the
        Claim you got). Free claims (expired or released) are taken over with ``attempt`` + 1.
        """
        path = self.path(key)
        mine = None
        for _ in range(3):  # a claim released/taken between our read and our write: look again, briefly
            current = self.read(key)
            if mine is not None and current is not None and current.owner == self.owner \
                    and current.nonce == mine.nonce:
                return dataclasses.replace(mine, token=current.token)  # our write went through, its answer was lost
            if current is None:
                mine = self._new(key, attempt=1)
                token = self.cas.create(path, mine.to_bytes())
            elif current.is_live(self.clock()):
                return None
            else:
                mine = self._new(key, attempt=current.attempt + 1)
                token = self.cas.replace(path, mine.to_bytes(), current.token)
            if token is not None:
                return self._verified(key, dataclasses.replace(mine, token=token))
        return None

    def _verified(self, key: ClaimKey, mine: Claim) -> Claim | None:
        """Re-read after winning: cheap insurance against a store whose conditional write is not honoured."""
        stored = self.read(key)
        if stored is None or stored.owner != self.owner or stored.nonce != mine.nonce:
            log.warning("claim %s was won but then found owned by %s; backing off", self.path(key),
                        None if stored is None else stored.owner)
            return None
        return dataclasses.replace(mine, token=stored.token)

    def renew(self, claim: Claim) -> Claim:
        """Extend the lease by ``lease_seconds`` from now; raises ``ClaimLost`` if the claim is no longer ours."""
        if claim.owner != self.owner or claim.token is None:
            raise ClaimLost(f"claim {self.path(claim.key)} is not a claim this store ({self.owner}) won")
        renewed = dataclasses.replace(claim, lease_expires_at=self.clock() + self.lease_seconds,
                                      nonce=uuid.uuid4().hex, token=None)
        token = self.cas.replace(self.path(claim.key), renewed.to_bytes(), claim.token)
        if token is None:
            holder = self.read(claim.key)
            if holder is not None and holder.owner == self.owner and holder.nonce == renewed.nonce:
                # our PUT went through but its answer was lost; the retry's stale If-Match was refused
                return dataclasses.replace(renewed, token=holder.token)
            raise ClaimLost(f"claim {self.path(claim.key)} was taken over by "
                            f"{holder.owner if holder else 'nobody (deleted)'}")
        return dataclasses.replace(renewed, token=token)

    def release(self, claim: Claim) -> bool:
        """Mark the claim released (free for anyone at once). False if it was no longer ours (nothing changed).

        The file stays, with ``released_at`` set, as a record of who measured last and how many attempts it took;
        ``try_claim`` treats it as free.
        """
        if claim.owner != self.owner or claim.token is None:
            return False
        now = self.clock()
        released = dataclasses.replace(claim, released_at=now, lease_expires_at=min(claim.lease_expires_at, now),
                                       nonce=uuid.uuid4().hex, token=None)
        return self.cas.replace(self.path(claim.key), released.to_bytes(), claim.token) is not None

    def list_claims(self) -> list[Claim]:
        """Every stored claim (live or not), for status displays; sorted by path."""
        base = f"{self.root}/{CLAIMS}"
        self.fs.invalidate_cache()
        try:
            paths = sorted(p for p in self.fs.find(base) if p.endswith(".json")
                           and not p.rsplit("/", 1)[-1].startswith("."))
        except FileNotFoundError:
            return []
        out = []
        for p in paths:
            found = self.cas.read(p)
            if found is None:
                continue
            try:
                out.append(Claim.from_bytes(*found))
            except (ValueError, KeyError, TypeError):
                log.warning("skipping unreadable claim file %s", p)
        return out
