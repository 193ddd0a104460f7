r"""Off-policy (EA-)KD with the Hugging Face ``Trainer``: the paper's LLM setting on your data.

:class:`EAKDTrainer` is a ``transformers.Trainer`` whose loss is an eakd token loss between the
student being trained and a frozen teacher, on the dataset's own responses (``labels``: the
token ids, ``-100`` on prompt and padding positions, unshifted as for any causal LM)::

    L = (1 / D) sum_{b,t} m_{b,t} w_{b,t} l(q_{b,t}, p_{b,t})

with ``q``/``p`` the student's/teacher's next-token distributions at position ``t`` (predicting
``labels[:, t + 1]``), ``m`` the mask ``labels[:, 1:] != -100``, ``w`` the EA weight (1 without
EA) and ``D`` the number of such tokens in the whole optimizer step (all gradient-accumulation
micro-batches, all processes). So accumulating ``k`` micro-batches gives the gradient of one
batch ``k`` times larger, exactly.

The loss is one of:

* a full-logit loss: :class:`eakd.EntropyAdaptive` over a registered token loss
  (``EntropyAdaptive(build_loss("forward_kl"), EASettings(temperature=1.0,
  granularity="sequence"))``), or a token loss alone (plain KD);
* :class:`eakd.losses.token.ChunkedTokenDistillation`: the same values from the final hidden
  states and ``lm_head`` weights, without the ``(B, T, V)`` logits.

Students may be PEFT (LoRA) models. The teacher is put in eval mode, frozen and run without
gradients. Next to the Trainer's logs, an EA loss logs ``ea/mean_weight``,
``ea/student_entropy`` and ``ea/teacher_entropy`` (token means over the logging window).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

try:
    import transformers
except ImportError as err:  # pragma: no cover - transformers is in the llm extra
    raise ImportError("eakd.integrations.hf needs transformers: pip install 'eakd[llm]'") from err

from ..adaptive import EntropyAdaptive
from ..losses.token.chunked import ChunkedTokenDistillation
from ..losses.token.heads import check_head, chunked_head
from ..losses.token.losses import TokenDivergenceLoss
from ._common import redirect, stat_means, stat_sums

__all__ = ["EAKDTrainer"]

_SOFTCAP_HINT = "use a full-logit loss (EntropyAdaptive over a token loss) for this model"


def _unwrap_peft(model: nn.Module) -> nn.Module:
    """The causal LM inside a PEFT model (LoRA layers stay injected in it), else the model."""
    get_base = getattr(model, "get_base_model", None)
    if getattr(model, "peft_config", None) is not None and callable(get_base):
        return get_base()
    return model


def _last_hidden(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """Final hidden states (after the last norm) of a causal LM's backbone, without logits."""
    return _unwrap_peft(model).base_model(**inputs).last_hidden_state


def _check_loss(loss: Any) -> tuple[bool, int]:
    """``(chunked, ignore_index)`` of an accepted loss; anything else is refused."""
    if isinstance(loss, ChunkedTokenDistillation):
        return True, loss.ignore_index
    inner = loss.loss if isinstance(loss, EntropyAdaptive) else loss
    if isinstance(inner, TokenDivergenceLoss):
        return False, inner.ignore_index
    raise TypeError(
        "loss must be a token loss of eakd.losses.token (e.g. build_loss('forward_kl')), "
        "EntropyAdaptive over one, or a ChunkedTokenDistillation; got "
        f"{type(loss).__name__}"
        + (f" over {type(inner).__name__}" if isinstance(loss, EntropyAdaptive) else "")
    )


def _vocab(model: nn.Module, who: str) -> int:
    head = _unwrap_peft(model).get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise ValueError(f"the {who} ({type(model).__name__}) is not a causal LM with an lm_head")
    return int(head.weight.shape[0])


class EAKDTrainer(transformers.Trainer):
    """``transformers.Trainer`` for off-policy (EA-)KD from a frozen teacher.

    Args:
        model: the student (a causal LM, or a PEFT model around one).
        args: ``transformers.TrainingArguments``.
        teacher_model: the teacher, a causal LM with the student's vocabulary.
        loss: the eakd loss (see the module docstring).
        **kwargs: the other ``Trainer`` arguments (``train_dataset``, ``data_collator``,
            ``processing_class``, ``callbacks``, ``optimizers``, ...).

    Batches need ``input_ids`` and ``labels`` (and usually ``attention_mask``); every key but
    ``labels`` is passed to both models.
    """

    # the loss is normalised by the step's token count (see ``get_batch_samples``)
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: nn.Module,
        args: transformers.TrainingArguments | None = None,
        *,
        teacher_model: nn.Module,
        loss: nn.Module,
        **kwargs: Any,
    ) -> None:
        self._chunked, self._ignore_index = _check_loss(loss)
        if not isinstance(teacher_model, nn.Module):
            raise TypeError(
                f"teacher_model must be a loaded causal LM, got {type(teacher_model).__name__}"
            )
        vs, vt = _vocab(model, "student"), _vocab(teacher_model, "teacher")
        if vs != vt:
            raise ValueError(
                f"the student's vocabulary has {vs} entries but the teacher's has {vt}; "
                "token-level distillation needs one tokenizer and vocabulary for both"
            )
        if self._chunked:
            check_head(_unwrap_peft(model), "student", _SOFTCAP_HINT)
            check_head(teacher_model, "teacher", _SOFTCAP_HINT)
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("EAKDTrainer computes its own loss; drop compute_loss_func")
        super().__init__(model, args, **kwargs)
        if self.args.n_gpu > 1:
            raise ValueError(
                "EAKDTrainer does not support nn.DataParallel (several GPUs in one process); "
                "launch with torchrun or accelerate launch, or make one GPU visible"
            )
        teacher_model.eval()
        teacher_model.requires_grad_(False)
        if self.is_deepspeed_enabled:  # the teacher is held whole on every process
            self.teacher_model = teacher_model.to(self.accelerator.device)
        else:
            self.teacher_model = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        self.kd_loss = loss
        # transformers < 5 decides the gradient-accumulation scaling from this flag
        self.model_accepts_loss_kwargs = True
        self._ea_sums: dict[str, torch.Tensor | None] = {"train": None, "eval": None}

    def get_batch_samples(self, epoch_iterator, num_batches, *args, **kwargs):
        """The step's micro-batches and ``D``: the tokens that count (``labels[:, 1:] !=
        ignore_index``) in all of them, summed over the processes."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, *args, **kwargs)
        device = self.args.device
        count = None
        for batch in batch_samples:
            labels = batch.get("labels") if isinstance(batch, Mapping) else None
            if labels is None:
                continue
            n = (labels[:, 1:] != self._ignore_index).sum().to(device)
            count = n if count is None else count + n
        if count is not None and self.accelerator.num_processes > 1:
            count = self.accelerator.gather(count[None]).sum()
        return batch_samples, count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The distillation loss of one micro-batch, normalised by ``num_items_in_batch`` (the
        step's token count over all processes, divided here by the process count because
        data-parallel training averages the gradients) or, without it, by its own tokens."""
        if "labels" not in inputs:
            raise ValueError(
                "EAKDTrainer needs a 'labels' column: the token ids with -100 at prompt and "
                "padding positions"
            )
        labels = inputs["labels"]
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        model_inputs["use_cache"] = False
        target = labels[:, 1:]
        n = num_items_in_batch
        if n is not None and self.accelerator.num_processes > 1:
            n = n / self.accelerator.num_processes
        teacher = self.teacher_model
        teacher.eval()
        if self._chunked:
            loss = self._chunked_loss(model, teacher, model_inputs, target, n)
        else:
            logits = model(**model_inputs).logits[:, :-1]
            with torch.no_grad():
                t_logits = teacher(**model_inputs).logits[:, :-1]
            loss = self.kd_loss(logits, t_logits, target, num_items=n)
        self._record()
        return (loss, None) if return_outputs else loss

    def _chunked_loss(self, model, teacher, inputs, target, n):
        unwrapped = self.accelerator.unwrap_model(model)
        unwrapped_teacher = self.accelerator.unwrap_model(teacher)
        with self.accelerator.autocast():
            hidden = redirect(model, unwrapped, _last_hidden, unwrapped, inputs)[:, :-1]
            with torch.no_grad():
                t_hidden = redirect(
                    teacher, unwrapped_teacher, _last_hidden, unwrapped_teacher, inputs
                )[:, :-1]
        hs, ws, bs = chunked_head(_unwrap_peft(unwrapped), hidden, "student", _SOFTCAP_HINT)
        ht, wt, bt = chunked_head(unwrapped_teacher, t_hidden, "teacher", _SOFTCAP_HINT)
        return self.kd_loss(
            hs, ws, ht.to(hs.device), wt, target, student_bias=bs, teacher_bias=bt, num_items=n
        )

    def _record(self) -> None:
        """Add the micro-batch's EA statistics (summed over the processes) to the window."""
        loss_module = self.kd_loss
        weighted = isinstance(loss_module, EntropyAdaptive) or (
            isinstance(loss_module, ChunkedTokenDistillation) and loss_module.ea
        )
        stats = getattr(loss_module, "last_stats", None)
        if not weighted or stats is None:
            return
        sums = stat_sums(stats)
        if self.accelerator.num_processes > 1:
            sums = self.accelerator.gather(sums[None]).sum(0)
        mode = "train" if self.model.training else "eval"
        prev = self._ea_sums[mode]
        self._ea_sums[mode] = sums if prev is None else prev + sums

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation computes the distillation loss (a token mean per batch); no logits."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        mode = "train" if self.model.training else "eval"
        sums = self._ea_sums[mode]
        if sums is not None:
            prefix = "eval_" if mode == "eval" else ""
            # in place: evaluate() returns this dict
            logs.update({prefix + k: v for k, v in stat_means(sums).items()})
            self._ea_sums[mode] = None
        super().log(logs, *args, **kwargs)
