"""On-policy data for the engine's loop: student-generated responses mixed with the dataset's.

Generalized knowledge distillation (GKD, Agarwal et al., ICLR 2024) trains on sequences the
student samples itself with probability ``lmbda`` and on the dataset's otherwise; the teacher
scores whichever sequences the batch holds. Here the draw is made per micro-batch: with
probability ``lmbda`` each example's response is replaced by one the student samples from the
example's prompt, cut after its first EOS (or at ``max_new_tokens`` / ``data.max_length``),
and the labels mask the prompt as for dataset responses.

Both the draw and the sampling are seeded from ``(train.seed, step, process, micro-batch)``
alone, inside a forked RNG: the samples do not depend on what ran before, so a resumed run
draws what the uninterrupted run would have, and the global RNG (dropout) is left untouched.

This is the simple, single-loop form, with ``transformers``' ``generate``; for on-policy
training at scale (vLLM generation, larger batches), :mod:`eakd.integrations.trl` puts eakd's
loss into TRL's trainer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from .data import IGNORE_INDEX, EncodedExample

__all__ = ["draw_on_policy", "prompt_length", "sample_responses", "step_seed"]


def step_seed(*parts: object) -> int:
    """A 63-bit seed determined by ``parts`` only (stable across processes and runs)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def draw_on_policy(lmbda: float, seed: int) -> bool:
    """The GKD draw: ``True`` with probability ``lmbda`` (``u < lmbda``, ``u ~ U[0, 1)``)."""
    u = torch.rand((), generator=torch.Generator().manual_seed(seed))
    return bool(u < lmbda)


def prompt_length(example: EncodedExample) -> int:
    """The number of leading prompt positions (``labels == -100``) of an encoded example."""
    for i, label in enumerate(example.labels):
        if label != IGNORE_INDEX:
            return i
    return len(example.labels)


class _KeepVocabulary:
    """A logits processor that rules out the padding rows past the shared vocabulary."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        scores[:, self.size :] = -float("inf")
        return scores


@torch.no_grad()
def sample_responses(
    model: nn.Module,
    tokenizer,
    examples: Sequence[EncodedExample],
    *,
    seed: int,
    max_new_tokens: int,
    max_length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    vocab_size: int | None = None,
) -> list[EncodedExample]:
    """The examples with their responses replaced by samples of ``model`` from their prompts.

    Prompts are left-padded and sampled in one ``generate`` call (eval mode, no dropout) with
    ``torch.manual_seed(seed)`` inside a forked RNG. A sample ends after its first EOS; with
    ``vocab_size``, token ids ``>= vocab_size`` (padding rows of the head) are never drawn.
    Sequences are cut to ``max_length`` like dataset examples.
    """
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompts = [list(e.input_ids[: prompt_length(e)]) for e in examples]
    if any(not p for p in prompts):
        raise ValueError("on-policy sampling needs a non-empty prompt in every example")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        attn[i, width - len(p) :] = 1
    device = next(model.parameters()).device
    budget = max(1, min(max_new_tokens, max_length - min(len(p) for p in prompts)))
    kwargs = {
        "max_new_tokens": budget,
        "do_sample": True,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "pad_token_id": pad,
        "eos_token_id": eos,
    }
    head = model.get_output_embeddings()
    if vocab_size is not None and head is not None and head.weight.shape[0] > vocab_size:
        kwargs["logits_processor"] = [_KeepVocabulary(vocab_size)]
    was_training = model.training
    model.eval()
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            out = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), **kwargs)
    finally:
        model.train(was_training)
    new = out[:, width:].tolist()
    result = []
    for prompt, tokens in zip(prompts, new, strict=True):
        if eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]
        seq = (prompt + tokens)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt) + tokens)[:max_length]
        result.append(EncodedExample(seq, labels))
    return result
