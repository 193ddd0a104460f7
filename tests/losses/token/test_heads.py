"""The lm_head as the chunked loss sees it: a logit scale folded exactly, soft-capping refused."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from eakd.losses.token.heads import check_head, chunked_head, logit_scale


class TinyLM(nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.config = types.SimpleNamespace(**config)
        self.lm_head = nn.Linear(4, 7)

    def get_output_embeddings(self):
        return self.lm_head


@pytest.mark.parametrize(
    ("config", "scale"),
    [({}, 1.0), ({"logit_scale": 0.5}, 0.5), ({"logits_scaling": 4.0}, 0.25)],
)
def test_the_logit_scale_is_folded_into_hidden_states_and_bias(config, scale):
    model = TinyLM(**config)
    h = torch.randn(3, 4, requires_grad=True)
    assert logit_scale(model) == scale
    hs, w, b = chunked_head(model, h, "student", "use full logits")
    logits = scale * model.lm_head(h)  # what the model's softmax sees
    torch.testing.assert_close(hs @ w.t() + b, logits)
    (g_folded,) = torch.autograd.grad((hs @ w.t() + b).square().sum(), h)
    (g_model,) = torch.autograd.grad(logits.square().sum(), h)
    torch.testing.assert_close(g_folded, g_model)


def test_soft_capped_logits_are_refused_with_the_hint():
    model = TinyLM(final_logit_softcapping=30.0)
    with pytest.raises(ValueError, match="soft-caps its logits .* use full logits"):
        check_head(model, "teacher", "use full logits")
