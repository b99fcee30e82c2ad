"""Watcher: polls a Source, claims checkpoints in RESULTS (see ``claims``), dispatches measurements."""
