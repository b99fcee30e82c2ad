"""What a soak run must leave behind, checked from RESULTS alone (Parquet and claim files, read with the package's
own readers): one final row per checkpoint, complete non-duplicated draws, no live claim, and the same outcome
table as a clean run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

VALUE_COLUMNS = ("llc_mean", "llc_std", "init_loss")


@dataclass
class Verdict:
    checkpoints: int
    lost: list[str] = field(default_factory=list)  # expected checkpoints with no summary row
    duplicated: list[str] = field(default_factory=list)  # checkpoints with more than one summary row
    unexpected: list[str] = field(default_factory=list)  # rows for checkpoints we never wrote
    bad_draws: list[str] = field(default_factory=list)  # draws missing, extra or repeated
    live_claims: list[str] = field(default_factory=list)
    unreleased_claims: int = 0  # expired, never released (their watcher was SIGKILLed): harmless
    retried_rows: int = 0  # rows with attempt > 1
    retried_claims: int = 0  # claims with attempt > 1 (taken over after a watcher died, or retried)
    statuses: dict = field(default_factory=dict)  # uri -> status
    mismatches: list[str] = field(default_factory=list)  # differences from the clean run
    bit_identical: bool | None = None  # λ̂, std and init loss equal to the last bit in every checkpoint

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.bad_draws or self.live_claims
                    or self.mismatches)

    def problems(self) -> list[str]:
        out = []
        for name in ("lost", "duplicated", "unexpected", "bad_draws", "live_claims", "mismatches"):
            items = getattr(self, name)
            if items:
                out.append(f"{name} ({len(items)}): " + "; ".join(items[:10]))
        return out


def _draw_key(row: dict) -> tuple:
    return (row["run_id"], row["config_hash"], int(row["checkpoint_step"]), row["checkpoint_fingerprint"])


def check_results(results_uri: str, storage_options: dict, expected_uris: list[str]) -> tuple[Verdict, dict]:
    """Verdict on RESULTS, and {uri: summary row} of the rows found (the first one when duplicated)."""
    from llc_service.sinks import read_draws, read_summary
    from llc_service.watcher.claims import ClaimStore

    verdict = Verdict(checkpoints=len(expected_uris))
    summary = read_summary(results_uri, storage_options=storage_options)
    rows: dict[str, list[dict]] = {}
    for rec in summary.to_dict("records"):
        rows.setdefault(str(rec["checkpoint_uri"]).rstrip("/"), []).append(rec)
    expected = {u.rstrip("/") for u in expected_uris}
    for uri in sorted(expected):
        found = rows.get(uri, [])
        if not found:
            verdict.lost.append(uri)
        elif len(found) > 1:
            verdict.duplicated.append(f"{uri} x{len(found)}")
    verdict.unexpected = sorted(set(rows) - expected)
    first = {uri: found[0] for uri, found in rows.items()}
    verdict.statuses = {uri: row["status"] for uri, row in first.items()}
    verdict.retried_rows = sum(1 for row in first.values() if int(row["attempt"] or 1) > 1)

    draws = read_draws(results_uri, storage_options=storage_options)
    per_key: dict[tuple, list[tuple[int, int]]] = {}
    for rec in draws[["run_id", "config_hash", "checkpoint_step", "checkpoint_fingerprint", "chain",
                      "draw"]].to_dict("records"):
        per_key.setdefault(_draw_key(rec), []).append((int(rec["chain"]), int(rec["draw"])))
    ok_keys = set()
    for uri, row in first.items():
        if row["status"] != "ok":
            continue
        key = _draw_key(row)
        ok_keys.add(key)
        want = {(c, d) for c in range(int(row["num_chains"])) for d in range(int(row["num_draws"]))}
        got = per_key.get(key, [])
        if len(got) != len(want) or set(got) != want:
            verdict.bad_draws.append(f"{uri}: {len(got)} draw rows ({len(set(got))} distinct), want {len(want)}")
    for key in set(per_key) - ok_keys:
        verdict.bad_draws.append(f"draws without an ok summary row: {key}")

    for claim in ClaimStore(results_uri, storage_options).list_claims():
        if claim.is_live():
            verdict.live_claims.append(f"{claim.key} held by {claim.owner}")
        elif claim.released_at is None:
            verdict.unreleased_claims += 1
        verdict.retried_claims += int(claim.attempt > 1)
    return verdict, first


def compare_with_clean(verdict: Verdict, rows: dict, clean_rows: dict, rtol: float = 1e-9) -> None:
    """Fill ``verdict.mismatches`` and ``bit_identical``: status per checkpoint, and λ̂, its std and the init loss
    (bit for bit if every checkpoint agrees exactly; otherwise within ``rtol``, and the difference is reported)."""
    identical = True
    for uri in sorted(set(rows) | set(clean_rows)):
        a, b = rows.get(uri), clean_rows.get(uri)
        if a is None or b is None:
            verdict.mismatches.append(f"{uri}: {'missing' if a is None else 'extra'} compared with the clean run")
            continue
        if a["status"] != b["status"]:
            verdict.mismatches.append(f"{uri}: status {a['status']} vs clean {b['status']} ({a.get('error')})")
            continue
        for col in VALUE_COLUMNS:
            x, y = a.get(col), b.get(col)
            if x is None or y is None or (isinstance(x, float) and math.isnan(x)):
                identical &= (x is None) == (y is None)
                continue
            if x != y:
                identical = False
                if not math.isclose(x, y, rel_tol=rtol, abs_tol=0.0):
                    verdict.mismatches.append(f"{uri}: {col} {x!r} vs clean {y!r}")
    verdict.bit_identical = identical
