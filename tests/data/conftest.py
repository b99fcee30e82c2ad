import pytest

from tests.sinks.moto_s3 import s3_bucket, s3_endpoint  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def tokenizer():
    """A real byte-level BPE tokenizer (vocab 300) trained on stdlib source in well under a second."""
    from llc_service.demo.assets import train_tokenizer

    return train_tokenizer(vocab_size=300, max_bytes=300_000)
