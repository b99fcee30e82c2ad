"""Parts of scripts/soak.py: fault proxy, processes, the S3 world, checks."""
