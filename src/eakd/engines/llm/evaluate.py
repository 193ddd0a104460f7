"""Sampling-based generation and Rouge-L, over several seeds, per dataset and averaged.

The protocol of DistiLLM / MiniLLM as reported in EA-KD's Table 7: sample
with top-k 0, top-p 1.0, temperature 1.0 (no_repeat_ngram_size 6), one run per seed (10, 20,
30, 40, 50), Rouge-L F1 with stemming, the maximum over the references, times 100; the mean
(and std) over seeds per dataset, then the average over datasets.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .data import Example, collate_generation

__all__ = ["GenerationConfig", "evaluate_rouge", "generate_responses", "rouge_l"]


@dataclass
class GenerationConfig:
    """Sampling settings of the evaluation (DistiLLM defaults)."""

    max_new_tokens: int = 256
    do_sample: bool = True
    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    no_repeat_ngram_size: int = 6
    batch_size: int = 8
    max_prompt_length: int = 256
    seeds: list[int] = field(default_factory=lambda: [10, 20, 30, 40, 50])


_SCORER = None


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """Rouge-L F1 (``rouge-score``, Porter stemming), max over references, in percent."""
    global _SCORER
    if _SCORER is None:
        try:
            from rouge_score import rouge_scorer
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ImportError("Rouge-L needs rouge-score: pip install 'eakd[llm]'") from exc
        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    if not references:
        raise ValueError("rouge_l needs at least one reference")
    return 100.0 * max(_SCORER.score(ref, prediction)["rougeL"].fmeasure for ref in references)


@torch.no_grad()
def generate_responses(
    model, tokenizer, examples: Sequence[Example], config: GenerationConfig, seed: int
) -> list[str]:
    """Responses to ``examples`` (left-padded batches), sampled with ``torch.manual_seed(seed)``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = {
        "max_new_tokens": config.max_new_tokens,
        "do_sample": config.do_sample,
        "pad_token_id": pad,
        "eos_token_id": tokenizer.eos_token_id,
        "no_repeat_ngram_size": config.no_repeat_ngram_size or None,
    }
    if config.do_sample:
        kwargs.update(top_k=config.top_k, top_p=config.top_p, temperature=config.temperature)
    out: list[str] = []
    for start in range(0, len(examples), config.batch_size):
        chunk = examples[start : start + config.batch_size]
        batch = collate_generation(chunk, tokenizer, config.max_prompt_length)
        batch = {k: v.to(device) for k, v in batch.items()}
        gen = model.generate(**batch, **kwargs)
        new = gen[:, batch["input_ids"].shape[1] :]
        out.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    model.train(was_training)
    return out


def evaluate_rouge(
    model,
    tokenizer,
    datasets: Mapping[str, Sequence[Example]],
    config: GenerationConfig,
    seeds: Sequence[int] | None = None,
) -> dict:
    """Rouge-L per dataset (mean and std over seeds) and the average over datasets.

    Returns ``{"datasets": {name: {"mean", "std", "per_seed": {seed: score}, "examples"}},
    "average", "seeds", "samples": {name: first few (prompt, prediction, reference)}}``.
    """
    seeds = list(seeds if seeds is not None else config.seeds)
    if not seeds:
        raise ValueError("evaluation needs at least one seed")
    result: dict = {"datasets": {}, "seeds": seeds, "samples": {}}
    for name, examples in datasets.items():
        if not examples:
            raise ValueError(f"evaluation set {name!r} is empty")
        per_seed = {}
        for seed in seeds:
            preds = generate_responses(model, tokenizer, examples, config, seed)
            scores = [rouge_l(p, e.references) for p, e in zip(preds, examples, strict=True)]
            per_seed[seed] = sum(scores) / len(scores)
            if seed == seeds[0]:
                result["samples"][name] = [
                    {"instruction": e.instruction, "prediction": p, "reference": e.response}
                    for p, e in list(zip(preds, examples, strict=True))[:3]
                ]
        values = list(per_seed.values())
        result["datasets"][name] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": per_seed,
            "examples": len(examples),
        }
    means = [d["mean"] for d in result["datasets"].values()]
    result["average"] = statistics.fmean(means) if means else math.nan
    return result
