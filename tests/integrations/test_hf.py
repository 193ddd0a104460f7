"""``eakd.integrations.hf``: off-policy (EA-)KD with the Hugging Face Trainer.

The first optimizer step equals a hand-written EA-KD step (float64 formulas); gradient
accumulation over micro-batches equals one batch (the token count of the whole step);
PEFT (LoRA) students train their adapters only."""

from __future__ import annotations

import copy
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("eakd.integrations.hf")
from tiny_lms import VOCAB, make_lm  # noqa: E402

from eakd import EntropyAdaptive  # noqa: E402
from eakd.core import EASettings  # noqa: E402
from eakd.losses import build_loss  # noqa: E402
from eakd.losses.token import ChunkedTokenDistillation  # noqa: E402
from reference import token_formulas as ref  # noqa: E402

EAKDTrainer = hf.EAKDTrainer
LR = 0.5
SEQ = 10
# (prompt length, response length): unequal token counts, so a mean of micro-batch means
# differs from the token mean of the step
SHAPES = [(3, 2), (2, 7), (4, 3), (1, 5)]


def _examples():
    g = torch.Generator().manual_seed(0)
    rows = []
    for prompt, response in SHAPES:
        n = prompt + response
        ids = torch.randint(2, VOCAB, (SEQ,), generator=g)
        ids[n:] = 0  # right padding
        labels = ids.clone()
        labels[:prompt] = -100
        labels[n:] = -100
        attn = (torch.arange(SEQ) < n).long()
        rows.append(
            {"input_ids": ids.tolist(), "attention_mask": attn.tolist(), "labels": labels.tolist()}
        )
    return rows


def _batch_tensors():
    rows = _examples()
    return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}


def _args(tmp_path, **kw):
    kw = {
        "output_dir": str(tmp_path),
        "report_to": "none",
        "use_cpu": True,
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "learning_rate": LR,
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        **kw,
    }
    return transformers.TrainingArguments(**kw)


def _collate(rows):
    """Tensors in a BatchEncoding, as the tokenizer-based collators return them."""
    return transformers.BatchEncoding(transformers.default_data_collator(rows))


class _Snapshot(transformers.TrainerCallback):
    """The trainable parameters after the first optimizer step."""

    def __init__(self):
        self.after_first = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 1:
            self.after_first = {
                n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
            }


def _train(tmp_path, student, teacher, loss, trainer_cls=EAKDTrainer, **kw):
    snap = _Snapshot()
    params = [p for p in student.parameters() if p.requires_grad]
    trainer = trainer_cls(
        student,
        _args(tmp_path, **kw),
        teacher_model=teacher,
        loss=loss,
        train_dataset=_examples(),
        data_collator=_collate,
        optimizers=(torch.optim.SGD(params, lr=LR), None),
        callbacks=[snap],
    )
    trainer.train()
    return trainer, snap.after_first


def _hand_written(student, teacher, t_prime=1.0, granularity="sequence"):
    """EA-KD forward KL from the formulas, in float64: the loss of the whole batch and the
    SGD update of every parameter."""
    b = _batch_tensors()
    student = copy.deepcopy(student).double().train()
    zs = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    with torch.no_grad():
        t = copy.deepcopy(teacher).double()
        zt = t(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    mask = (b["labels"][:, 1:] != -100).double()
    per = ref.divergence("forward_kl", zs, zt)
    hs, ht = ref.entropy(zs.detach(), t_prime), ref.entropy(zt, t_prime)
    if granularity == "sequence":
        count = mask.sum(1, keepdim=True)
        hs = ((hs * mask).sum(1, keepdim=True) / count).expand_as(hs)
        ht = ((ht * mask).sum(1, keepdim=True) / count).expand_as(ht)
    w = ref.ea_weight(hs, ht, math.log(VOCAB))
    loss = (w * per * mask).sum() / mask.sum()
    loss.backward()
    updated = {
        n: (p - LR * p.grad).float() for n, p in student.named_parameters() if p.grad is not None
    }
    return float(loss.detach()), updated, float((w * mask).sum() / mask.sum())


def _loss(kind, granularity="sequence"):
    ea = EASettings(enabled=True, temperature=1.0, granularity=granularity)
    if kind == "full":
        return EntropyAdaptive(build_loss("forward_kl"), ea)
    return ChunkedTokenDistillation("forward_kl", ea=ea, chunk_size=4)


@pytest.mark.parametrize(
    ("kind", "granularity"), [("full", "sequence"), ("chunked", "sequence"), ("chunked", "item")]
)
def test_first_step_equals_hand_written_ea_kd(tmp_path, student, teacher, kind, granularity):
    expected_loss, expected, mean_w = _hand_written(student, teacher, granularity=granularity)
    trainer, after_first = _train(tmp_path, student, teacher, _loss(kind, granularity))
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and trainer.state.global_step == 2
    assert logs[0]["loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert logs[0]["ea/mean_weight"] == pytest.approx(mean_w, rel=1e-4)
    assert logs[1]["loss"] != pytest.approx(logs[0]["loss"], rel=1e-3)  # it did learn
    assert after_first.keys() == expected.keys()
    for name, p in after_first.items():
        torch.testing.assert_close(p, expected[name], rtol=1e-4, atol=1e-5, msg=name)


class _MeanOfMeans(EAKDTrainer):
    """Each micro-batch normalised by its own tokens, then divided by the accumulation steps
    (what a per-batch mean loss gives): the inexact alternative."""

    loss_is_scaled_for_ga = False

    def get_batch_samples(self, *args, **kwargs):
        return super().get_batch_samples(*args, **kwargs)[0], None


@pytest.mark.parametrize("kind", ["full", "chunked"])
def test_gradient_accumulation_equals_one_batch(tmp_path, student, teacher, kind):
    _, one = _train(tmp_path / "one", copy.deepcopy(student), teacher, _loss(kind), max_steps=1)
    accumulated = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}
    _, two = _train(
        tmp_path / "two", copy.deepcopy(student), teacher, _loss(kind), max_steps=1, **accumulated
    )
    for name, p in one.items():
        torch.testing.assert_close(two[name], p, rtol=1e-5, atol=1e-6, msg=name)
    _, naive = _train(
        tmp_path / "naive", copy.deepcopy(student), teacher, _loss(kind), _MeanOfMeans,
        max_steps=1, **accumulated,
    )  # fmt: skip
    assert any(not torch.allclose(naive[n], p, rtol=1e-4, atol=1e-6) for n, p in one.items())


def test_peft_student_trains_its_adapters_only(tmp_path, student, teacher):
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn"], fan_in_fan_out=True
    )
    # B = 0 at initialisation: the adapted student starts as the base model
    expected_loss, _, _ = _hand_written(student, teacher)
    model = peft.get_peft_model(copy.deepcopy(student), lora)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    trainer, _ = _train(tmp_path, model, teacher, _loss("chunked"))
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs[0]["loss"] == pytest.approx(expected_loss, rel=1e-4)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())
    assert any(not torch.equal(params[n], p) for n, p in adapters.items())


def test_evaluation_reports_the_distillation_loss(tmp_path, student, teacher):
    expected_loss, _, mean_w = _hand_written(student, teacher)
    trainer = EAKDTrainer(
        student,
        _args(tmp_path, per_device_eval_batch_size=4),
        teacher_model=teacher,
        loss=_loss("chunked"),
        eval_dataset=_examples(),
        data_collator=transformers.default_data_collator,
    )
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert metrics["eval_ea/mean_weight"] == pytest.approx(mean_w, rel=1e-4)
    assert all(not p.requires_grad for p in trainer.teacher_model.parameters())
    assert not trainer.teacher_model.training


def test_refuses_bad_input(tmp_path, student, teacher):
    common = {"data_collator": transformers.default_data_collator}
    with pytest.raises(TypeError, match="loss must be a token loss"):
        EAKDTrainer(
            student, _args(tmp_path), teacher_model=teacher, loss=build_loss("kd"), **common
        )
    other = make_lm(3)
    other.resize_token_embeddings(VOCAB + 8)
    with pytest.raises(ValueError, match="vocabulary has 64 entries but the teacher's has 72"):
        EAKDTrainer(student, _args(tmp_path), teacher_model=other, loss=_loss("full"), **common)
    trainer = EAKDTrainer(student, _args(tmp_path), teacher_model=teacher, loss=_loss("full"))
    b = _batch_tensors()
    b.pop("labels")
    with pytest.raises(ValueError, match="needs a 'labels' column"):
        trainer.compute_loss(trainer.model, b)
    teacher.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="soft-caps its logits.*use a full-logit loss"):
        EAKDTrainer(student, _args(tmp_path), teacher_model=teacher, loss=_loss("chunked"))
    EAKDTrainer(student, _args(tmp_path), teacher_model=teacher, loss=_loss("full"))  # fine
