"""Test helpers shared across test folders (tiny checkpoints, a moto S3 server)."""
