"""Instruction data in Dolly JSONL form, the Alpaca-style prompt, prompt masking and batching.

Each line of a Dolly-format file is a JSON object with ``instruction``, ``context`` (may be
empty) and ``response`` (``input`` / ``output`` are accepted as aliases, and an evaluation file
may give a list of reference responses). This is the format of ``databricks-dolly-15k`` and of
the instruction-following sets of DistiLLM / MiniLLM (Dolly, SelfInst, Vicuna, S-NI, UnNI).

Training sequences are ``prompt + response + EOS``; labels are ``-100`` on the prompt and on
padding, so only the predictions of response tokens (including the first one, predicted from
the last prompt token, and the EOS) count.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "IGNORE_INDEX",
    "EncodedExample",
    "Example",
    "build_prompt",
    "collate_generation",
    "collate_train",
    "encode_example",
    "load_instructions",
    "split_holdout",
]

IGNORE_INDEX = -100

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

DOLLY_LAYOUT = (
    "one JSON object per line with keys 'instruction', 'context' (may be empty) and 'response', "
    'e.g. {"instruction": "Name a primary colour.", "context": "", "response": "Red."} '
    "(databricks-dolly-15k.jsonl has this layout; 'input'/'output' are accepted as aliases)"
)


@dataclass(frozen=True)
class Example:
    """One instruction example; ``references`` holds one or more reference responses."""

    instruction: str
    context: str
    references: tuple[str, ...]

    @property
    def response(self) -> str:
        return self.references[0]


def build_prompt(instruction: str, context: str = "") -> str:
    """The Alpaca-style prompt used by DistiLLM / MiniLLM (with an ``### Input:`` block only
    when there is a context)."""
    if context.strip():
        return PROMPT_WITH_INPUT.format(instruction=instruction.strip(), context=context.strip())
    return PROMPT_NO_INPUT.format(instruction=instruction.strip())


def _field(obj: dict[str, Any], names: Sequence[str], where: str, required: bool = True) -> Any:
    for n in names:
        if n in obj:
            return obj[n]
    if required:
        raise ValueError(f"{where}: missing key {names[0]!r}; expected {DOLLY_LAYOUT}")
    return ""


def load_instructions(path: str | Path, limit: int | None = None) -> list[Example]:
    """Read a Dolly-format JSONL file (see :data:`DOLLY_LAYOUT`)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"instruction data not found: {p}. Expected a JSONL file with {DOLLY_LAYOUT}. "
            "Download databricks-dolly-15k (or the DistiLLM evaluation sets) and point the "
            "config's data paths to the files"
        )
    out: list[Example] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{where}: not valid JSON ({exc.msg}); expected {DOLLY_LAYOUT}"
                ) from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            instruction = _field(obj, ("instruction", "prompt"), where)
            context = _field(obj, ("context", "input"), where, required=False) or ""
            response = _field(obj, ("response", "output"), where)
            refs = tuple(response) if isinstance(response, list) else (response,)
            if not all(isinstance(r, str) for r in refs) or not isinstance(instruction, str):
                raise ValueError(f"{where}: instruction and response must be strings")
            out.append(Example(instruction, str(context), refs))
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise ValueError(f"{p} holds no examples; expected {DOLLY_LAYOUT}")
    return out


def split_holdout(
    examples: Sequence[Example], size: int, seed: int = 1
) -> tuple[list[Example], list[Example]]:
    """Shuffle with ``seed`` and hold out ``size`` examples (DistiLLM's ``--dev-num``)."""
    if size < 0 or size >= len(examples):
        raise ValueError(
            f"cannot hold out {size} of {len(examples)} examples for validation; use a value "
            f"in [0, {len(examples) - 1}] or give data.valid"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:size])
    return (
        [e for i, e in enumerate(examples) if i not in held],
        [examples[i] for i in sorted(held)],
    )


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_example(
    example: Example,
    tokenizer,
    max_length: int = 512,
    max_prompt_length: int = 256,
) -> EncodedExample:
    """Token ids of ``prompt + response + EOS`` and labels with the prompt masked.

    The prompt keeps the tokenizer's own special tokens (a BOS for Llama-style tokenizers),
    cut to ``max_prompt_length`` tokens; the whole sequence is cut to ``max_length``.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token")
    prompt = _ids(tokenizer, build_prompt(example.instruction, example.context), True)
    prompt = prompt[:max_prompt_length]
    response = [*_ids(tokenizer, example.response, False), tokenizer.eos_token_id]
    ids = (prompt + response)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + response)[:max_length]
    return EncodedExample(ids, labels)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


def collate_train(batch: Sequence[EncodedExample], tokenizer) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (``-100`` on padding)."""
    width = max(len(e.input_ids) for e in batch)
    pad = _pad_id(tokenizer)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attn[i, :n] = 1
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def collate_generation(
    examples: Sequence[Example], tokenizer, max_prompt_length: int = 256
) -> dict[str, torch.Tensor]:
    """Left-padded prompts for batched generation."""
    prompts = [
        _ids(tokenizer, build_prompt(e.instruction, e.context), True)[:max_prompt_length]
        for e in examples
    ]
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), _pad_id(tokenizer), dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        attn[i, width - len(p) :] = 1
    return {"input_ids": ids, "attention_mask": attn}
