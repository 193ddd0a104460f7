"""``eakd.integrations.trl``: TRL's DistillationTrainer with eakd's chunked (EA-)KD loss.

Without EA the loss is TRL's own (a differential test against TRL's functions on the same
batch); with EA it is eakd's full-logit reference, EntropyAdaptive over the token loss."""

from __future__ import annotations

import copy
import importlib
import math
import sys

import pytest
import torch

trl = pytest.importorskip("trl")
eakd_trl = pytest.importorskip("eakd.integrations.trl")
from tiny_lms import EOS, PAD, VOCAB  # noqa: E402
from trl.trainer.distillation_trainer import _chunked_divergence_loss  # noqa: E402

from eakd import EntropyAdaptive  # noqa: E402
from eakd.core import EASettings  # noqa: E402
from eakd.integrations._common import METRICS  # noqa: E402
from eakd.losses import build_loss  # noqa: E402
from eakd.losses.token import ChunkedTokenDistillation  # noqa: E402

EADistillationConfig = eakd_trl.EADistillationConfig
EADistillationTrainer = eakd_trl.EADistillationTrainer


# ----------------------------------------------------------------------------- the loss function


def _hidden_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    B, K, HS, HT, V = 3, 6, 8, 12, 37
    hs = torch.randn(B, K, HS, generator=g).requires_grad_(True)
    ws = (0.5 * torch.randn(V, HS, generator=g)).requires_grad_(True)
    bs = (0.3 * torch.randn(V, generator=g)).requires_grad_(True)
    ht = torch.randn(B, K, HT, generator=g)
    wt = 0.5 * torch.randn(V, HT, generator=g)
    bt = 0.3 * torch.randn(V, generator=g)
    mask = torch.ones(B, K, dtype=torch.long)
    mask[0, 4:] = 0  # right padding of the completions
    mask[2, 1:] = 0
    return hs, ws, bs, ht, wt, bt, mask


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_loss_is_trls_generalized_jsd(beta, temperature):
    """TRL's beta maps onto eakd's jsd with the same beta and weighting="gkd": equal values and
    gradients (hidden states, lm_head weight and bias), reduced over TRL's token count."""
    hs, ws, bs, ht, wt, bt, mask = _hidden_inputs()
    n_items = torch.tensor(11.0)  # e.g. the count over all accumulated micro-batches
    ref, _, n_valid = _chunked_divergence_loss(
        hs, ht, ws, wt, mask, beta, num_items_in_batch=n_items,
        student_lm_head_bias=bs, teacher_lm_head_bias=bt, temperature=temperature,
    )  # fmt: skip
    ours = ChunkedTokenDistillation(
        "jsd", ea=False, beta=beta, weighting="gkd", temperature=temperature, chunk_size=4
    )
    loss = ours(
        hs, ws, ht, wt, student_bias=bs, teacher_bias=bt, mask=mask.bool(), num_items=n_items
    )
    assert int(n_valid) == int(mask.sum())
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(_grads(loss, (hs, ws, bs)), _grads(ref, (hs, ws, bs)), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    if 0 < beta < 1 and beta != 0.5:  # the other weighting is a different divergence
        other = ChunkedTokenDistillation("jsd", ea=False, beta=beta, temperature=temperature)
        value = other(hs, ws, ht, wt, student_bias=bs, teacher_bias=bt, mask=mask.bool())
        assert not torch.allclose(value * mask.sum() / n_items, ref.detach(), rtol=1e-3)


def test_local_token_mean_without_count():
    """Without num_items both reduce over the micro-batch's own valid tokens."""
    hs, ws, _, ht, wt, _, mask = _hidden_inputs(1)
    ref, _, _ = _chunked_divergence_loss(hs, ht, ws, wt, mask, 0.5)
    ours = ChunkedTokenDistillation("jsd", ea=False, beta=0.5, weighting="gkd")
    torch.testing.assert_close(ours(hs, ws, ht, wt, mask=mask.bool()), ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the trainer


def _config(cls, tmp_path, **kw):
    kw = {
        "output_dir": str(tmp_path),
        "report_to": "none",
        "bf16": False,
        "use_cpu": True,
        "gradient_checkpointing": False,
        "per_device_train_batch_size": 2,
        "max_completion_length": 4,
        "logging_steps": 1,
        "seed": 0,
        **kw,
    }
    return cls(**kw)


def _prompts():
    from datasets import Dataset

    return Dataset.from_dict({"prompt": ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9", "w10"]})


def _trainer(cls, config_cls, tmp_path, student, teacher, tokenizer, **kw):
    return cls(
        model=student,
        teacher_model=teacher,
        args=_config(config_cls, tmp_path, **kw),
        train_dataset=_prompts(),
        processing_class=tokenizer,
    )


def _batch():
    """A generation batch as TRL's _generate_and_score_completions returns it."""
    prompt_ids = torch.tensor([[PAD, 5, 6, 7], [8, 9, 10, 11], [PAD, PAD, 12, 13]])
    prompt_mask = (prompt_ids != PAD).long()
    completion_ids = torch.tensor(
        [[20, 21, 22, EOS, PAD], [23, 24, 25, 26, 27], [28, EOS] + [PAD] * 3]
    )
    completion_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "num_items_in_batch": completion_mask.sum(),
    }


def _loss_and_grads(trainer):
    model = trainer.model
    model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, _batch())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize(("beta", "temperature"), [(0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (0.3, 1.7)])
def test_trainer_without_ea_equals_trls_loss(
    tmp_path, student, teacher, tokenizer, beta, temperature
):
    """Same batch, same models: TRL's trainer and ours give the same loss, gradients and
    logged entropy."""
    common = {"beta": beta, "temperature": temperature}
    theirs = _trainer(
        trl.DistillationTrainer, trl.DistillationConfig, tmp_path / "trl",
        copy.deepcopy(student), teacher, tokenizer, **common,
    )  # fmt: skip
    ours = _trainer(
        EADistillationTrainer, EADistillationConfig, tmp_path / "ea",
        copy.deepcopy(student), teacher, tokenizer, ea_enabled=False, chunk_size=5, **common,
    )  # fmt: skip
    ref, ref_grads = _loss_and_grads(theirs)
    loss, grads = _loss_and_grads(ours)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    m, ref_m = ours._metrics["train"], theirs._metrics["train"]
    assert m["entropy"] == pytest.approx(ref_m["entropy"], rel=1e-5)
    assert m["ea/mean_weight"] == [1.0]


def test_logit_scales_are_read_as_trl_reads_them(tmp_path, student, teacher, tokenizer):
    """A config's logit_scale / logits_scaling multiply the logits in TRL's loss; eakd folds
    them into the hidden states and bias, with the same loss and gradients."""
    student.config.logit_scale = 0.5
    teacher.config.logits_scaling = 4.0  # Granite: logits / 4
    theirs = _trainer(
        trl.DistillationTrainer, trl.DistillationConfig, tmp_path / "trl",
        copy.deepcopy(student), teacher, tokenizer, beta=0.4,
    )  # fmt: skip
    ours = _trainer(
        EADistillationTrainer, EADistillationConfig, tmp_path / "ea",
        copy.deepcopy(student), teacher, tokenizer, beta=0.4, ea_enabled=False,
    )  # fmt: skip
    ref, ref_grads = _loss_and_grads(theirs)
    loss, grads = _loss_and_grads(ours)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    del student.config.logit_scale
    plain = _trainer(
        EADistillationTrainer, EADistillationConfig, tmp_path / "plain",
        copy.deepcopy(student), teacher, tokenizer, beta=0.4, ea_enabled=False,
    )  # fmt: skip
    unscaled, _ = _loss_and_grads(plain)
    assert not torch.allclose(unscaled, loss, rtol=1e-3)


def test_soft_capped_logits_are_refused_before_training(tmp_path, student, teacher, tokenizer):
    teacher.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="the teacher soft-caps its logits"):
        _trainer(EADistillationTrainer, EADistillationConfig, tmp_path, student, teacher, tokenizer)


def _reference(student, teacher, batch, loss):
    """eakd's full-logit path: the models' logits at the completion positions, then
    EntropyAdaptive over the registered token loss, reduced over TRL's token count."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    k = batch["completion_ids"].shape[1]
    zs = student(input_ids=ids, attention_mask=attn).logits[:, :-1][:, -k:]
    with torch.no_grad():
        zt = teacher(input_ids=ids, attention_mask=attn).logits[:, :-1][:, -k:]
    labels = batch["completion_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    return loss(zs, zt, labels, num_items=batch["num_items_in_batch"])


CASES = [
    ("jsd", {}, {"beta": 0.5, "weighting": "gkd"}, "sequence", 1.0),
    ("jsd", {}, {"beta": 0.2, "weighting": "gkd"}, "item", 2.0),
    ("jsd", {"weighting": "interpolate"}, {"beta": 0.2, "weighting": "interpolate"}, "item", 1.0),
    ("skew_kl", {"alpha": 0.1}, {"alpha": 0.1}, "sequence", 1.0),
    ("reverse_kl", {}, {}, "item", 1.0),
]


@pytest.mark.parametrize(("divergence", "params", "ref_params", "granularity", "t_prime"), CASES)
def test_trainer_with_ea_equals_full_logit_reference(
    tmp_path, student, teacher, tokenizer, divergence, params, ref_params, granularity, t_prime
):
    trainer = _trainer(
        EADistillationTrainer, EADistillationConfig, tmp_path, copy.deepcopy(student), teacher,
        tokenizer, beta=0.5 if divergence != "jsd" else ref_params["beta"], divergence=divergence,
        divergence_params=params, ea_granularity=granularity, ea_temperature=t_prime,
        chunk_size=3,
    )  # fmt: skip
    loss, grads = _loss_and_grads(trainer)

    ref_student = copy.deepcopy(student).train()
    ea = EASettings(temperature=t_prime, granularity=granularity)
    wrapped = EntropyAdaptive(build_loss(divergence, **ref_params), ea)
    ref = _reference(ref_student, teacher, _batch(), wrapped)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
    for name, p in ref_student.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)

    # the logged statistics are the token means of the reference's weights and entropies
    st = wrapped.last_stats
    mask = st.mask
    metrics = trainer._metrics["train"]
    assert metrics["ea/mean_weight"][-1] == pytest.approx(float(st.weights[mask].mean()), rel=1e-5)
    assert metrics["ea/student_entropy"][-1] == pytest.approx(
        float(st.student_entropy[mask].mean()), rel=1e-5
    )
    assert metrics["ea/teacher_entropy"][-1] == pytest.approx(
        float(st.teacher_entropy[mask].mean()), rel=1e-5
    )
    # TRL's "entropy" (the student's at the distillation temperature) only when the pass has it
    assert ("entropy" in metrics) == (t_prime == 1.0)


def test_on_policy_training_logs_ea_next_to_trl(tmp_path, student, teacher, tokenizer):
    """Two on-policy steps (the student generates): the student changes and every log has
    TRL's metrics and the EA statistics."""
    trainer = _trainer(
        EADistillationTrainer, EADistillationConfig, tmp_path, copy.deepcopy(student), teacher,
        tokenizer, max_steps=2, learning_rate=1e-2, beta=0.5,
    )  # fmt: skip
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        for key in ("loss", "entropy", "completions/mean_length", *METRICS):
            assert key in h and math.isfinite(h[key]), (key, h)
        assert 0 < h["ea/student_entropy"] <= math.log(VOCAB) + 1e-4
        assert 0 < h["ea/teacher_entropy"] <= math.log(VOCAB) + 1e-4
        w = 0.5 * h["ea/teacher_entropy"]
        assert h["ea/mean_weight"] > 0.4 * w  # w = 0.5 H_T (1 + H_S / log V) per sequence
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"divergence": "kl"}, ValueError, "divergence must be one of"),
        ({"divergence_params": {"beta": 0.3}}, ValueError, "it is the config's `beta` field"),
        ({"divergence_params": {"temperature": 2}}, ValueError, "`temperature` field"),
        ({"divergence": "skew_kl", "divergence_params": {"gamma": 1}}, TypeError, "'gamma'"),
        ({"ea_granularity": "token"}, ValueError, "ea_granularity must be one of"),
        ({"ea_kind": "entropy"}, ValueError, "ea_kind must be one of"),
        ({"ea_temperature": 0.0}, ValueError, "ea_temperature must be > 0"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive integer"),
    ],
)
def test_config_refuses_bad_options(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        _config(EADistillationConfig, tmp_path, **kwargs)


def test_config_reads_dict_fields_from_strings(tmp_path):
    cfg = _config(
        EADistillationConfig, tmp_path, divergence="skew_kl", divergence_params='{"alpha": 0.2}'
    )
    assert cfg.divergence_params == {"alpha": 0.2}
    assert cfg.build_loss().spec.params["alpha"] == 0.2


def test_trainer_needs_the_ea_config(tmp_path, student, teacher, tokenizer):
    with pytest.raises(TypeError, match="args must be an EADistillationConfig"):
        EADistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=_config(trl.DistillationConfig, tmp_path),
            train_dataset=_prompts(),
            processing_class=tokenizer,
        )


def test_a_dataset_without_a_prompt_column_is_refused(tmp_path, student, teacher, tokenizer):
    from datasets import Dataset

    questions = Dataset.from_dict({"question": ["w1 w2", "w3"]})
    for key in ("train_dataset", "eval_dataset"):
        data = {"train_dataset": _prompts(), key: questions}
        with pytest.raises(ValueError, match=rf"{key} has columns \['question'\] .* 'prompt'"):
            EADistillationTrainer(
                model=student,
                teacher_model=teacher,
                args=_config(EADistillationConfig, tmp_path),
                processing_class=tokenizer,
                **data,
            )


def test_missing_trl_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl -> ImportError
    monkeypatch.delitem(sys.modules, "eakd.integrations.trl")
    with pytest.raises(ImportError, match=r"pip install 'eakd\[trl\]'"):
        importlib.import_module("eakd.integrations.trl")


def test_peft_student_with_ea(tmp_path, student, teacher, tokenizer):
    """TRL wraps the student in LoRA (peft_config); the EA loss reaches the adapters only and
    starts at the base model's full-logit reference (LoRA's B is 0 at initialisation)."""
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn"], fan_in_fan_out=True
    )
    trainer = EADistillationTrainer(
        model=copy.deepcopy(student),
        teacher_model=teacher,
        args=_config(EADistillationConfig, tmp_path, beta=0.5, ea_granularity="item"),
        train_dataset=_prompts(),
        processing_class=tokenizer,
        peft_config=lora,
    )
    loss, grads = _loss_and_grads(trainer)
    assert grads and all("lora_" in n for n in grads)
    assert any(float(g.abs().max()) > 0 for n, g in grads.items() if "lora_B" in n)
    ea = EASettings(temperature=1.0, granularity="item")
    wrapped = EntropyAdaptive(build_loss("jsd", beta=0.5, weighting="gkd"), ea)
    with torch.no_grad():
        expected = _reference(student, teacher, _batch(), wrapped)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
