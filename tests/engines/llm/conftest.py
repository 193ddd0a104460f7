import os

import pytest

# Anything here that touches transformers must stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.",
    "### Instruction:\nName a primary colour.\n\n### Response:\nRed is a primary colour.",
    "### Input:\nThe sky is blue and the grass is green.",
    "What is the capital of France? Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
]

EXAMPLES = [
    {"instruction": "Name a primary colour.", "context": "", "response": "Red."},
    {"instruction": "What is the capital of France?", "context": "", "response": "Paris."},
    {"instruction": "Summarise the text.", "context": "The sky is blue.", "response": "Blue sky."},
    {"instruction": "Count to three.", "context": "", "response": "One, two, three."},
    {"instruction": "Say hello.", "context": "", "response": "Hello there!"},
    {"instruction": "What colour is grass?", "context": "", "response": "Grass is green."},
]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A byte-level BPE tokenizer and tiny random Llama models (teacher 3 layers, student 2)
    saved in save_pretrained layout; returns their folders."""
    transformers = pytest.importorskip("transformers")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("tiny_llm")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    paths = {}
    for name, layers, seed in (("teacher", 3, 0), ("student", 2, 1)):
        torch.manual_seed(seed)
        cfg = transformers.LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.eos_token_id,
            tie_word_embeddings=name == "student",
        )
        model = transformers.LlamaForCausalLM(cfg)
        path = root / name
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths[name] = path
    # a GPT-2 student with another vocabulary size: the mismatch case
    cfg = transformers.GPT2Config(
        vocab_size=len(tok) + 7,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    path = root / "gpt2_other_vocab"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    paths["other_vocab"] = path
    return paths


@pytest.fixture(scope="session")
def dolly_file(tmp_path_factory):
    import json

    path = tmp_path_factory.mktemp("dolly") / "train.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    return path


@pytest.fixture(scope="session")
def loaded(tiny_models):
    """The tokenizer and the tiny teacher / student, loaded once (copy before mutating)."""
    from eakd.engines.llm import load_causal_lm, load_tokenizer

    return {
        "tokenizer": load_tokenizer(tiny_models["teacher"]),
        "teacher": load_causal_lm(tiny_models["teacher"]),
        "student": load_causal_lm(tiny_models["student"]),
    }


@pytest.fixture(scope="session")
def padded_models(tiny_models, tmp_path_factory):
    """Tiny Llama teacher / student sharing the tiny tokenizer (320 tokens) with lm_heads padded
    to different sizes, as Qwen2.5 checkpoints are (151936 vs 152064 rows): teacher 336 rows,
    student 328; and a student whose head is smaller than the tokenizer (a real mismatch)."""
    transformers = pytest.importorskip("transformers")
    import torch

    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_models["teacher"]))
    root = tmp_path_factory.mktemp("padded_llm")
    paths = {}
    for name, rows, layers, seed in (
        ("teacher", len(tok) + 16, 3, 2),
        ("student", len(tok) + 8, 2, 3),
        ("short", len(tok) - 4, 1, 4),
    ):
        torch.manual_seed(seed)
        cfg = transformers.LlamaConfig(
            vocab_size=rows,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.eos_token_id,
        )
        path = root / name
        transformers.LlamaForCausalLM(cfg).save_pretrained(path)
        tok.save_pretrained(path)
        paths[name] = path
    return paths


@pytest.fixture
def run_config(tiny_models, dolly_file):
    """``run_config(out, **train)``: a small LoRA-free training config whose run directory is
    ``out`` (CPU, chunked forward KL, sequence-level EA, two steps of 2 x 2 examples)."""

    def make(out, **train):
        return {
            "name": out.name,
            "output_dir": str(out.parent),
            "model": {
                "teacher": str(tiny_models["teacher"]),
                "student": str(tiny_models["student"]),
            },
            "data": {"train": str(dolly_file), "valid_size": 2, "max_length": 160},
            "loss": {"divergence": "forward_kl", "chunk_size": 16},
            "ea": {"enabled": True, "granularity": "sequence", "temperature": 1.0},
            "train": {
                "batch_size": 2,
                "gradient_accumulation_steps": 2,
                "max_steps": 2,
                "lr": 1e-2,
                "scheduler": "constant",
                "device": "cpu",
                "log_every_steps": 1,
                "save_every_steps": 1,
                "select_best": False,
                "tensorboard": False,
                **train,
            },
            "eval": {
                "datasets": {"tiny": str(dolly_file)},
                "seeds": [1],
                "max_new_tokens": 6,
                "max_examples": 3,
                "batch_size": 3,
            },
        }

    return make


@pytest.fixture
def torchrun_train(tmp_path):
    """``torchrun_train(config)``: ``eakd llm train`` of ``config`` (a dict) under torchrun with
    2 CPU processes (gloo), offline; fails the test with the processes' output if it fails."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    def run(config: dict) -> None:
        path = tmp_path / f"{config['name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path(__file__).parents[3] / "src"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", "2", "-m", "eakd.cli", "llm", "train", str(path), "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    return run
