"""The chaos soak (scripts/soak.py): its parts on known inputs, a short run by default, the long one slow."""
