"""Watcher: polls a Source, claims checkpoints in RESULTS (``claims``), dispatches measurements to Ray and records
every outcome once (``watch``)."""
