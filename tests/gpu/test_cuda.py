"""The CUDA paths against the CPU and full-logit references (skipped without a CUDA device).

Run by ``pytest tests/gpu`` or, on a machine without pytest, by ``python tests/gpu/standalone.py``
(scripts/gpu_check.sh picks whichever is there). Every test builds its inputs on the CPU from a
seeded generator and moves them, so both devices see the same numbers.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from eakd import EntropyAdaptive, build_loss
from eakd.core import EASettings
from eakd.engines.classification import ClassificationTask, MethodConfig
from eakd.losses.token import ChunkedTokenDistillation

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")


def _close(got: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Element-wise agreement to ``rtol`` of the reference's largest magnitude (gradients of a
    mean over many rows have entries near 0, where a purely relative test is meaningless)."""
    expected = expected.detach().cpu().double()
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(got.detach().cpu().double(), expected, rtol=rtol, atol=rtol * scale)


# -- the chunked LLM loss ------------------------------------------------------------------


def _llm_inputs(b=4, t=256, h=64, v=8192, dtype=torch.float32, device=None):
    device = CUDA if device is None else device
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(b, t, h, generator=g) * h**-0.25
    ws = torch.randn(v, h, generator=g) * h**-0.25
    ht = torch.randn(b, t, h, generator=g) * h**-0.25 * 1.5  # a sharper teacher
    wt = torch.randn(v, h, generator=g) * h**-0.25
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :16] = -100  # prompt
    labels[1, 200:] = -100  # padding

    def put(x, grad=False):
        return x.to(device=device, dtype=dtype).requires_grad_(grad)

    return put(hs, True), put(ws, True), put(ht), put(wt), labels.to(device)


def _full_logits(hs, ws, ht, wt, labels, ea: EASettings):
    """The full-logit path: ``(B, T, V)`` logits, the registered ``jsd`` loss, EA on top."""
    jsd = build_loss("jsd", beta=0.5, weighting="gkd")
    loss = EntropyAdaptive(jsd, ea) if ea.enabled else jsd
    with torch.no_grad():
        zt = ht.float() @ wt.float().t()
    return loss(hs.float() @ ws.float().t(), zt, labels)


def _chunked(hs, ws, ht, wt, labels, ea: EASettings, chunk_size=128):
    kd = ChunkedTokenDistillation("jsd", beta=0.5, weighting="gkd", ea=ea, chunk_size=chunk_size)
    return kd(hs, ws, ht, wt, labels)


def _run_with_peak(fn, *inputs):
    """``(loss, grads, peak MB above the memory allocated before the call)``."""
    hs, ws = inputs[0], inputs[1]
    hs.grad = ws.grad = None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss = fn(*inputs)
    loss.backward()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    return loss.detach(), (hs.grad.clone(), ws.grad.clone()), peak


@pytest.mark.parametrize(
    "ea",
    [
        EASettings(enabled=False),
        EASettings(enabled=True, granularity="item", temperature=1.0),
        EASettings(enabled=True, granularity="sequence", temperature=2.0),
    ],
    ids=["ea-off", "ea-token", "ea-sequence"],
)
def test_chunked_loss_equals_full_logits_on_cuda_with_less_memory(ea):
    inputs = _llm_inputs()
    loss_f, grads_f, peak_f = _run_with_peak(lambda *x: _full_logits(*x, ea), *inputs)
    loss_c, grads_c, peak_c = _run_with_peak(lambda *x: _chunked(*x, ea), *inputs)
    assert loss_c.dtype == torch.float32 and math.isfinite(float(loss_c))
    _close(loss_c, loss_f, 1e-5)
    for got, expected in zip(grads_c, grads_f, strict=True):
        _close(got, expected, 1e-4)
    # full: several (1024, 8192) float32 tensors (32 MB each); chunked: (128, 8192) ones
    assert peak_c < 0.5 * peak_f, (peak_c, peak_f)


def test_chunked_loss_on_cuda_equals_cpu():
    ea = EASettings(enabled=True, granularity="sequence", temperature=1.0)
    results = []
    for device in (torch.device("cpu"), CUDA):
        hs, ws, ht, wt, labels = _llm_inputs(b=2, t=64, v=1000, device=device)
        loss = _chunked(hs, ws, ht, wt, labels, ea, chunk_size=50)
        loss.backward()
        results.append((loss.detach(), hs.grad, ws.grad))
    for got, expected in zip(results[1], results[0], strict=True):
        _close(got, expected, 1e-4)


def test_bf16_chunked_loss_on_cuda_is_float32_and_close_to_the_float32_loss():
    ea = EASettings(enabled=True, granularity="item", temperature=1.0)
    hs, ws, ht, wt, labels = _llm_inputs(dtype=torch.bfloat16)
    loss = _chunked(hs, ws, ht, wt, labels, ea)
    loss.backward()
    assert loss.dtype == torch.float32
    assert hs.grad.dtype == ws.grad.dtype == torch.bfloat16
    # the same bf16 numbers in float32 through the full-logit path
    ref_in = [x.detach().float().requires_grad_(x.requires_grad) for x in (hs, ws, ht, wt)]
    ref = _full_logits(*ref_in, labels, ea)
    ref.backward()
    _close(loss, ref, 1e-4)  # the chunked path computes in float32 from the bf16 inputs
    _close(hs.grad, ref_in[0].grad, 1e-2)  # gradients rounded to bf16 at the end
    _close(ws.grad, ref_in[1].grad, 1e-2)


# -- EA over logit losses ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kd", "dkd"])
@pytest.mark.parametrize(
    "shape", [(8, 10), (512, 1000)]
)  # the one-node kernel and the general path
def test_entropy_adaptive_kd_and_dkd_on_cuda_equal_cpu(name, shape):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(*shape, generator=g) * 3
    t = torch.randn(*shape, generator=g) * 3
    y = torch.randint(0, shape[1], (shape[0],), generator=g)
    params = {"kd": {"temperature": 4.0}, "dkd": {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}}
    results = []
    for device in (torch.device("cpu"), CUDA):
        wrapper = EntropyAdaptive(build_loss(name, **params[name]), temperature=3.0)
        student = s.to(device).requires_grad_(True)
        loss = wrapper(student, t.to(device), y.to(device))
        (grad,) = torch.autograd.grad(loss, student)
        results.append((loss.detach(), grad, wrapper.last_stats.weights))
    for got, expected in zip(results[1], results[0], strict=True):
        _close(got, expected, 1e-5)


# -- a classification training step under bf16 autocast ---------------------------------------


class TinyCnn(nn.Module):
    def __init__(self, width: int, classes: int = 10, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        f = self.body(x)
        pooled = f.mean((2, 3))
        return self.fc(pooled), {"feats": [f], "preact_feats": [f], "pooled_feat": pooled}


def _task(method: str, device: torch.device) -> ClassificationTask:
    loss = {"kd": {"temperature": 4.0}, "dkd": {"beta": 2.0, "temperature": 4.0}}[method]
    cfg = MethodConfig(name=method, ce_weight=1.0, kd_weight=1.0, loss=loss)
    ea = EASettings(enabled=True, temperature=3.0)
    task = ClassificationTask(TinyCnn(32, seed=1), TinyCnn(16, seed=2), cfg, ea, 10)
    return task.to(device)


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_bf16_autocast_training_steps_with_ea_on_cuda(method):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 3, 16, 16, generator=g)
    reference = _task(method, torch.device("cpu")).train()
    with torch.no_grad():
        y = reference.teacher(x)[0].argmax(1)  # labels the teacher agrees with: learnable
    expected = reference((x, y))["loss"]  # float32 on the CPU, same weights
    task = _task(method, CUDA).train()
    params = task.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    batch = (x.to(CUDA), y.to(CUDA))
    losses = []
    for step in range(20):
        with torch.autocast(CUDA.type, dtype=torch.bfloat16):
            out = task(batch)
        loss = out["loss"]
        value = float(loss.detach())
        assert math.isfinite(value), f"step {step}: loss {value}"
        if step == 0:
            assert out["logits"].dtype == torch.bfloat16  # autocast is on
            torch.testing.assert_close(value, float(expected.detach()), rtol=5e-2, atol=1e-2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        optimizer.step()
        losses.append(value)
    assert losses[-1] < 0.5 * losses[0], losses  # it learns the fixed batch
    diag = task.diagnostics()
    assert 0 < diag["weight_min"] <= diag["weight_mean"] <= diag["weight_max"]
    assert sum(diag["hist_count"]) == 20 * 32
