"""The one exception the loader raises for checkpoints it will not load."""

from __future__ import annotations

from llc_service.errors import PermanentError


class CheckpointError(PermanentError):
    """Permanent refusal of a checkpoint: retrying will not help until the files change.

    The message names the checkpoint and the reason, so a recorded failure row explains itself.
    """

    def __init__(self, uri: str, reason: str):
        self.uri = uri
        self.reason = reason
        super().__init__(f"checkpoint {uri}: {reason}")
