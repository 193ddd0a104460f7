r"""EA-KD in TRL's on-policy ``DistillationTrainer`` (TRL >= 1.16, ``pip install 'eakd[trl]'``).

:class:`EADistillationTrainer` keeps everything TRL's trainer does (the student generates the
completions, with transformers or vLLM; PEFT students; Accelerate, DeepSpeed and FSDP; TRL's
logging) and replaces only the loss: TRL's chunked generalized JSD becomes eakd's exact chunked
token loss (:class:`eakd.losses.token.ChunkedTokenDistillation`), which weights every
completion token, or every completion, by its EA weight

.. math::
    L = \frac{1}{D}\sum_{b,k} m_{b,k}\, w_{b,k}\, \ell(q_{b,k}, p_{b,k}),\qquad
    w = \tfrac12 H^T \big(1 + H^S / H_{ub}\big)\ (\text{detached})

with ``m`` the completion mask, ``D`` TRL's token count (``num_items_in_batch``) and ``l`` the
divergence at TRL's ``temperature``.

Divergences. ``divergence="jsd"`` (the default) is TRL's generalized JSD with TRL's ``beta``:
``m = beta p + (1 - beta) q`` (``p`` teacher, ``q`` student) and
``l = beta KL(p || m) + (1 - beta) KL(q || m)``; ``beta = 0`` is the forward ``KL(p || q)``,
``beta = 1`` the reverse ``KL(q || p)``. In eakd's terms that is ``jsd`` with the same ``beta``
and ``weighting="gkd"``. The other eakd token divergences (``forward_kl``, ``reverse_kl``,
``skew_kl``, ``skew_reverse_kl``, ``tvd``) take their hyper-parameters from
``divergence_params`` and ignore ``beta``.

With ``ea_enabled=False`` the loss equals TRL's own in value and gradient.

Example::

    from eakd.integrations.trl import EADistillationConfig, EADistillationTrainer

    args = EADistillationConfig(output_dir="out", beta=0.5, ea_granularity="sequence")
    trainer = EADistillationTrainer(
        model=student, teacher_model=teacher, args=args,
        train_dataset=prompts, processing_class=tokenizer,
    )
    trainer.train()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

try:
    import trl
except ImportError as err:  # pragma: no cover - exercised by the test with TRL hidden
    raise ImportError(
        "eakd.integrations.trl needs TRL >= 1.16 (its DistillationTrainer): pip install 'eakd[trl]'"
    ) from err

from packaging.version import Version

from ..core.settings import EASettings
from ..losses.token.chunked import ChunkedTokenDistillation
from ..losses.token.divergences import DIVERGENCES
from ..losses.token.heads import check_head, chunked_head
from ._common import stat_means, stat_sums

MIN_TRL = "1.16"

if not hasattr(trl, "DistillationTrainer") or Version(trl.__version__) < Version(MIN_TRL):
    raise ImportError(
        f"eakd.integrations.trl needs TRL >= {MIN_TRL} (its DistillationTrainer), found "
        f"{trl.__version__}: pip install -U 'eakd[trl]'"
    )

__all__ = ["EADistillationConfig", "EADistillationTrainer"]

#: Where the chunked loss cannot follow a model's logits.
_SOFTCAP_HINT = "use TRL's DistillationTrainer for this model (without EA)"


@dataclass
class EADistillationConfig(trl.DistillationConfig):
    r"""TRL's :class:`~trl.DistillationConfig` with eakd's loss and EA options.

    Parameters (besides TRL's; ``beta`` and ``temperature`` keep TRL's meaning):
        divergence (`str`, defaults to `"jsd"`): the token divergence; `"jsd"` is TRL's
            generalized JSD with `beta`; or `forward_kl`, `reverse_kl`, `skew_kl`,
            `skew_reverse_kl`, `tvd`.
        divergence_params (`dict`, *optional*): that divergence's hyper-parameters (`alpha`
            and `form` of the skew divergences, `form` of `forward_kl`; for `jsd`,
            `weighting`: `"gkd"` (TRL's, the default) or `"interpolate"`).
        chunk_size (`int`, defaults to `1024`): completion tokens per chunk of the loss.
        ea_enabled (`bool`, defaults to `True`): apply the EA weights.
        ea_temperature (`float`, defaults to `1.0`): the entropy temperature `T'` (eakd's LLM
            recipes use 1; the classification default is 3).
        ea_max_entropy (`float`, *optional*): `H_ub`; `None` means `log V`. Set it for a padded
            vocabulary.
        ea_kind (`str`, defaults to `"ea"`): the weight formula (`eakd.core.WEIGHT_KINDS`).
        ea_granularity (`str`, defaults to `"sequence"`): `"sequence"`: one weight per
            completion from its mean token entropies (EA-KD's LLM setting); `"item"`: a weight
            per token.
    """

    _VALID_DICT_FIELDS: ClassVar[list[str]] = [
        *trl.DistillationConfig._VALID_DICT_FIELDS,
        "divergence_params",
    ]

    divergence: str = field(
        default="jsd",
        metadata={
            "help": "Token divergence: 'jsd' (TRL's generalized JSD with `beta`), 'forward_kl', "
            "'reverse_kl', 'skew_kl', 'skew_reverse_kl' or 'tvd'.",
        },
    )
    divergence_params: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Hyper-parameters of the divergence: alpha and form (skew divergences), "
            "form (forward_kl), weighting ('gkd' or 'interpolate', jsd).",
        },
    )
    chunk_size: int = field(
        default=1024, metadata={"help": "Completion tokens per chunk of the loss."}
    )
    ea_enabled: bool = field(default=True, metadata={"help": "Apply the EA weights."})
    ea_temperature: float = field(
        default=1.0, metadata={"help": "Entropy temperature T' of the EA weights."}
    )
    ea_max_entropy: float | None = field(
        default=None, metadata={"help": "H_ub of the EA weight; None means log V."}
    )
    ea_kind: str = field(
        default="ea", metadata={"help": "EA weight formula (eakd.core.WEIGHT_KINDS)."}
    )
    ea_granularity: str = field(
        default="sequence",
        metadata={"help": "'sequence' (a weight per completion) or 'item' (per token)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        try:  # every eakd option is checked here, before any model is loaded
            self.build_loss()
        except (TypeError, ValueError) as err:
            raise type(err)(str(err).replace("ea.", "ea_")) from err

    def ea_settings(self) -> EASettings:
        """The :class:`~eakd.core.EASettings` of the ``ea_*`` fields."""
        return EASettings(
            enabled=self.ea_enabled,
            temperature=self.ea_temperature,
            max_entropy=self.ea_max_entropy,
            kind=self.ea_kind,
            granularity=self.ea_granularity,
        )

    def divergence_kwargs(self) -> dict[str, Any]:
        """The eakd divergence's hyper-parameters; for ``jsd``, TRL's ``beta`` with GKD's
        weighting (the convention of TRL's loss)."""
        if self.divergence not in DIVERGENCES:
            raise ValueError(
                f"divergence must be one of {sorted(DIVERGENCES)}, got {self.divergence!r}"
            )
        params = dict(self.divergence_params or {})
        own = ("temperature", "beta") if self.divergence == "jsd" else ("temperature",)
        for key in own:
            if key in params:
                raise ValueError(
                    f"divergence_params must not set {key!r}: it is the config's `{key}` field"
                )
        if self.divergence == "jsd":
            params = {"beta": self.beta, "weighting": "gkd", **params}
        return params

    def build_loss(self) -> ChunkedTokenDistillation:
        """The chunked loss these options describe.

        With ``ea_enabled=False`` the weights are the constant 1 (``kind="none"``) at the
        distillation temperature: the loss is unchanged, and the entropies TRL logs come out
        of the same pass.
        """
        ea = self.ea_settings()
        if not ea.enabled:
            ea = EASettings(enabled=True, temperature=self.temperature, kind="none")
        return ChunkedTokenDistillation(
            self.divergence,
            ea=ea,
            temperature=self.temperature,
            chunk_size=self.chunk_size,
            **self.divergence_kwargs(),
        )


def _full(t: torch.Tensor | None) -> torch.Tensor | None:
    """A plain tensor from an FSDP2 ``DTensor`` (gathered once, not once per chunk)."""
    dtensor = getattr(getattr(torch.distributed, "tensor", None), "DTensor", None)
    if dtensor is not None and isinstance(t, dtensor):
        return t.full_tensor()
    return t


def _check_prompt_column(dataset: Any, name: str) -> None:
    """TRL's distillation trainer samples completions for a ``prompt`` column: say so before
    the models load, not as a KeyError in the first step."""
    if isinstance(dataset, dict):
        for key, part in dataset.items():
            _check_prompt_column(part, f"{name}[{key!r}]")
        return
    columns = getattr(dataset, "column_names", None)
    if columns is not None and "prompt" not in columns:
        raise ValueError(
            f"{name} has columns {list(columns)} but TRL's distillation trainer needs a "
            "'prompt' column (text, or chat messages); rename or map yours, e.g. "
            "dataset.rename_column('question', 'prompt')"
        )


class EADistillationTrainer(trl.DistillationTrainer):
    """TRL's :class:`~trl.DistillationTrainer` with eakd's chunked (EA-)KD loss.

    Takes the same arguments; ``args`` must be an :class:`EADistillationConfig`. Next to TRL's
    metrics it logs ``ea/mean_weight``, ``ea/student_entropy`` and ``ea/teacher_entropy``:
    token means over the completion tokens (entropies at ``ea_temperature``, or at
    ``temperature`` with EA off). TRL's ``entropy`` (the student's, at ``temperature``) is
    logged when it is available from the same pass: with EA off, or ``ea_temperature ==
    temperature``.
    """

    _tag_names: ClassVar[list[str]] = [*trl.DistillationTrainer._tag_names, "eakd", "ea-kd"]

    def __init__(self, model: Any, teacher_model: Any = None, args: Any = None, **kwargs: Any):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = EADistillationConfig(f"{str(name).split('/')[-1]}-EA-Distillation")
        if not isinstance(args, EADistillationConfig):
            raise TypeError(
                f"args must be an EADistillationConfig (TRL's DistillationConfig with the EA "
                f"options), got {type(args).__name__}"
            )
        for key in ("train_dataset", "eval_dataset"):
            _check_prompt_column(kwargs.get(key), key)
        super().__init__(model, teacher_model, args, **kwargs)
        check_head(self.model, "student", _SOFTCAP_HINT)
        if self.teacher_model is not None:
            teacher = self.accelerator.unwrap_model(self.teacher_model)
            check_head(teacher, "teacher", _SOFTCAP_HINT)
        self.ea_loss = args.build_loss()
        # entropies at the distillation temperature come out of the loss's own pass
        ea = self.ea_loss.settings
        self._entropy_at_temperature = ea.temperature == args.temperature
        self._last_sums: torch.Tensor | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's ``compute_loss`` (token count, forward redirection, its ``entropy`` metric),
        plus the EA statistics of the step."""
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        if not self._entropy_at_temperature and metrics.get("entropy"):
            metrics["entropy"].pop()  # not computed in this pass (a NaN placeholder)
            if not metrics["entropy"]:
                del metrics["entropy"]
        if self._last_sums is not None:
            sums = self.accelerator.gather(self._last_sums[None]).sum(0)
            for key, value in stat_means(sums).items():
                metrics[key].append(value)
            self._last_sums = None
        return out

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        """TRL's ``_compute_loss`` with eakd's chunked loss in place of
        ``_chunked_divergence_loss``; returns TRL's ``(loss, entropy_sum, n_valid)``."""
        if self.teacher_model is None:
            raise ValueError("EADistillationTrainer needs a teacher_model")
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        completion_mask = inputs["completion_mask"]
        loss_mask = (
            completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        )
        logits_to_keep = inputs["completion_ids"].size(1)
        multimodal_keys = (
            "pixel_values",
            "image_grid_thw",
            "pixel_attention_mask",
            "spatial_shapes",
            "image_sizes",
            "token_type_ids",
            "mm_token_type_ids",
            "image_position_ids",
        )
        multimodal = {k: inputs[k] for k in multimodal_keys if k in inputs}

        student_hidden = self._get_last_hidden_state(
            unwrapped_student, input_ids, attention_mask, logits_to_keep, **multimodal
        )
        self.teacher_model.eval()
        unwrapped_teacher = self.accelerator.unwrap_model(self.teacher_model)
        with torch.no_grad():
            teacher_hidden = self._forward_redirection(
                self.teacher_model,
                unwrapped_teacher,
                self._get_last_hidden_state,
                unwrapped_teacher,
                input_ids,
                attention_mask,
                logits_to_keep,
                **multimodal,
            )
        hs, ws, bs = chunked_head(unwrapped_student, student_hidden, "student", _SOFTCAP_HINT)
        ht, wt, bt = chunked_head(unwrapped_teacher, teacher_hidden, "teacher", _SOFTCAP_HINT)
        ws, bs, wt, bt = _full(ws), _full(bs), _full(wt), _full(bt)
        if ws.device != wt.device:
            raise ValueError(
                f"the student's lm_head is on {ws.device} but the teacher's is on {wt.device}; "
                "place both on the same device in their device_map"
            )
        # with the model split across devices the backbone can end on another device
        hs, ht = hs.to(ws.device), ht.to(wt.device)
        mask = loss_mask.to(ws.device) != 0
        loss = self.ea_loss(
            hs,
            ws,
            ht,
            wt,
            student_bias=bs,
            teacher_bias=bt,
            mask=mask,
            num_items=num_items_in_batch,
        )
        self._last_sums = stat_sums(self.ea_loss.last_stats)
        n_valid = mask.sum()
        if self._entropy_at_temperature:
            entropy_sum = self._last_sums[1]
        else:
            entropy_sum = torch.full((), float("nan"), device=ws.device)
        return loss, entropy_sum, n_valid
