"""Tiny real assets built from what is on every machine: Python's standard-library source as text.

Used by the demo (README's first command), the benchmarks and the tests. Nothing is downloaded: a byte-level
BPE tokenizer is trained on the stdlib source, tiny transformers models are built from configs, trained for a
few steps on that text and saved with ``save_pretrained``.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

ARCHS = ("gpt_neox", "gpt2", "llama")


def stdlib_text(max_bytes: int = 2_000_000, skip_bytes: int = 0) -> list[str]:
    """Source files of the Python standard library, in a fixed order, as a list of documents."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    total = 0
    skipped = 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if skipped < skip_bytes:
            skipped += len(text)
            continue
        docs.append(text)
        total += len(text)
        if total >= max_bytes:
            break
    return docs


def train_tokenizer(out_dir: str | os.PathLike | None = None, vocab_size: int = 512, max_bytes: int = 2_000_000):
    """Train a byte-level BPE tokenizer on stdlib source (about a second); optionally save it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(stdlib_text(max_bytes), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def tiny_config(arch: str = "gpt_neox", vocab_size: int = 512, hidden: int = 64, layers: int = 2, heads: int = 4,
                max_len: int = 256):
    """A small config of a real transformers architecture."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, intermediate_size=4 * hidden,
                             max_position_embeddings=max_len, tie_word_embeddings=False)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_len)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=2 * hidden,
                           max_position_embeddings=max_len)
    raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")


def tiny_model(arch: str = "gpt_neox", seed: int = 0, **kw):
    """A freshly initialised tiny causal LM in fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **kw), dtype=torch.float32)
    return model.float()


def token_blocks(tokenizer, seq_len: int = 64, max_blocks: int = 512, max_bytes: int = 400_000, skip_bytes: int = 0):
    """Tokenize stdlib source into a LongTensor of shape (blocks, seq_len)."""
    import torch

    ids: list[int] = []
    for doc in stdlib_text(max_bytes, skip_bytes=skip_bytes):
        ids.extend(tokenizer(doc)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if len(ids) >= seq_len * max_blocks:
            break
    n = min(len(ids) // seq_len, max_blocks)
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def train_steps(model, blocks, steps: int, lr: float = 3e-3, batch_size: int = 16, seed: int = 0):
    """Train ``model`` in place for ``steps`` AdamW steps on ``blocks``; returns the last loss."""
    import torch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(0, blocks.shape[0], (batch_size,), generator=g)
        batch = blocks[idx]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    return float(loss.detach())


def save_checkpoint(model, out_dir: str | os.PathLike, tokenizer=None, max_shard_size: str | None = None,
                    trainer_state_step: int | None = None) -> Path:
    """``save_pretrained`` (safetensors), optionally sharded, optionally with an HF-Trainer ``trainer_state.json``."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"safe_serialization": True}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(str(out), **kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    if trainer_state_step is not None:
        (out / "trainer_state.json").write_text(json.dumps({"global_step": trainer_state_step}))
    return out
