"""The one exception the loader raises for checkpoints it will not load."""

from __future__ import annotations

from llc_service.errors import PermanentError


class CheckpointError(PermanentError):
    """Permanent refusal of a checkpoint: retrying will not help until the files change.

    The message names the checkpoint and the reason, so a recorded failure row explains itself.
    """

    advice = ("fix the files and save again (save_pretrained with safetensors, no custom code); a checkpoint whose "
              "files change gets a new fingerprint and is measured again")

    def __init__(self, uri: str, reason: str):
        self.uri = uri
        self.reason = reason
        super().__init__(f"checkpoint {uri}: {reason}")
