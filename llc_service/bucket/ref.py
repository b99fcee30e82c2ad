"""The one value a source hands downstream: which checkpoint folder, whose run, which step, which bytes, ready
or not."""

from __future__ import annotations

from dataclasses import dataclass

COMPLETE = "complete"
PENDING = "pending"


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint folder as seen by one listing.

    Frozen and JSON-friendly (``dataclasses.asdict``) so it can travel to Ray tasks and child processes.
    ``fingerprint`` names the weight files' identity (names, sizes, ETags or mtimes, index content): a rewritten
    checkpoint gets a new one, so results keyed by it are never silently reused for other weights.
    """

    uri: str
    """Folder URI in the protocol it was given ("/abs/path" for local, "s3://bucket/run/step100")."""
    run_id: str
    """Training run; by default the name of the checkpoint folder's parent."""
    step: int | None
    """Training step from the folder name or ``trainer_state.json``; None when neither tells."""
    fingerprint: str
    status: str
    """"complete" or "pending"."""
    reason: str | None = None
    """Why the checkpoint is pending (None when complete)."""

    @property
    def is_complete(self) -> bool:
        return self.status == COMPLETE
