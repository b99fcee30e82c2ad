"""The unit of work: one checkpoint to measure, and where its data and results are.

The same object travels everywhere a measurement is handed on: from the watcher and ``jobs/measure_many.py`` to
the Ray layer, into the Ray task, and (as JSON, with the config) to the ``torchrun`` processes of a multi-process
measurement. The measurement config travels beside it (Ray puts one copy in its object store for all units).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from llc_service.bucket.ref import CheckpointRef

_FIELDS = ("data_uri", "results_uri", "run_id", "attempt", "use_wandb", "data_fingerprint")


@dataclass
class MeasureUnit:
    """Measure ``checkpoint`` (a URI, or the :class:`CheckpointRef` a listing found) on ``data_uri`` into
    ``results_uri``. ``attempt`` counts tries (1 for the first); ``options``: extra keyword arguments for a custom
    unit function (tests and plugins; the real worker takes none)."""

    checkpoint: str | CheckpointRef
    data_uri: str
    results_uri: str
    run_id: str | None = None
    attempt: int = 1
    use_wandb: bool = True
    options: dict = field(default_factory=dict)
    data_fingerprint: str | None = None
    """DATA's fingerprint as the dispatcher computed it (part of the result's identity): rows of a measurement that
    fails before loading the data still carry it. None: the worker computes it (:func:`measure_unit`)."""

    @property
    def ref(self) -> CheckpointRef | None:
        return self.checkpoint if isinstance(self.checkpoint, CheckpointRef) else None

    @property
    def checkpoint_uri(self) -> str:
        return self.checkpoint.uri if isinstance(self.checkpoint, CheckpointRef) else str(self.checkpoint)

    def label(self) -> str:
        """``<run> step <step>`` (or the URI when the step is unknown), as progress lines name a checkpoint."""
        ref = self.ref
        run = self.run_id or (ref.run_id if ref else None)
        if ref is not None and ref.step is not None:
            return f"{run} step {ref.step}"
        return f"{run} {self.checkpoint_uri}" if run else self.checkpoint_uri

    def retry(self, attempt: int) -> MeasureUnit:
        return dataclasses.replace(self, attempt=attempt)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (for child processes)."""
        out = {k: getattr(self, k) for k in _FIELDS}
        out["checkpoint"] = dataclasses.asdict(self.ref) if self.ref else self.checkpoint_uri
        out["options"] = dict(self.options)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeasureUnit:
        """From :meth:`to_dict`, or a plain mapping (``checkpoint`` or ``checkpoint_uri``; other keys that are not
        fields go to ``options``). A missing location is a programming error."""
        extra = dict(data)
        checkpoint = extra.pop("checkpoint", None)
        uri = extra.pop("checkpoint_uri", None)
        checkpoint = checkpoint if checkpoint is not None else uri
        if checkpoint is None:
            raise ValueError(f"unit has no 'checkpoint' (or 'checkpoint_uri'): {dict(data)!r}")
        if isinstance(checkpoint, Mapping):
            checkpoint = CheckpointRef(**checkpoint)
        try:
            data_uri, results_uri = extra.pop("data_uri"), extra.pop("results_uri")
        except KeyError as e:
            raise ValueError(f"unit is missing {e.args[0]!r}: {dict(data)!r}") from None
        options = dict(extra.pop("options", None) or {})
        known = {k: extra.pop(k) for k in ("run_id", "attempt", "use_wandb", "data_fingerprint") if k in extra}
        options.update(extra)
        return cls(checkpoint, str(data_uri), str(results_uri), options=options, **known)

    @classmethod
    def of(cls, unit: MeasureUnit | Mapping[str, Any]) -> MeasureUnit:
        return unit if isinstance(unit, MeasureUnit) else cls.from_dict(unit)
