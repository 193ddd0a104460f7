"""Tiny random causal LMs and a word-level tokenizer, built in memory (no downloads)."""

from __future__ import annotations

VOCAB = 64  # "<pad>", "<eos>", "w0" ... "w61"
PAD, EOS = 0, 1


def make_tokenizer():
    """A word-level tokenizer whose vocabulary is exactly the models' 64 ids, left padding."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": PAD, "<eos>": EOS, **{f"w{i}": i + 2 for i in range(VOCAB - 2)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", padding_side="left"
    )
    assert len(fast) == VOCAB
    return fast


def make_lm(seed: int, n_layer: int = 2, n_embd: int = 32):
    """A GPT-2 causal LM with random weights and no dropout (deterministic forward)."""
    import torch
    import transformers

    cfg = transformers.GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg).eval()
