import pytest
from torch.utils.data import TensorDataset


@pytest.fixture(scope="session")
def tiny_lm():
    """A tiny GPT-NeoX trained for a moment on stdlib source, and its token blocks."""
    from llc_service.demo import assets

    tok = assets.train_tokenizer(vocab_size=256, max_bytes=200_000)
    blocks = assets.token_blocks(tok, seq_len=32, max_blocks=128, max_bytes=200_000)
    model = assets.tiny_model("gpt_neox", vocab_size=256, hidden=32)
    assets.train_steps(model, blocks, 30)
    return model, TensorDataset(blocks)
