"""FCFD: Function-Consistent Feature Distillation (Liu et al., ICLR 2023).

The student and the teacher are split into the same number of stages. Bridges map a stage's
output from one network's feature space into the other's, so mixed paths can run some stages on
one network and the rest on the other. Besides the usual student-from-teacher KL, each iteration
samples two mixed paths; their outputs must match the teacher's (KL), and every map that lives in
the teacher's feature space must match the teacher's own map (L2: "appearance" and the L2 part of
"function" consistency).

Mixed paths keep their own BatchNorm running statistics (one set per path prefix), so neither the
student's nor the teacher's statistics see them; the student's BN weights are shared. The EA
weight (not in FCFD's released code) multiplies the per-sample terms named in
``ea_targets`` (default: the KL terms).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.reduction import reduce
from ..logit.kd import kd_per_item
from ..registry import register_loss
from ._taps import arch_name, describe_shapes, probe, tap_error

__all__ = [
    "EA_TARGETS",
    "PATH_MODES",
    "FCFDLoss",
    "FCFDOutput",
    "PerItemValues",
    "candidate_paths",
    "make_bridge",
    "path_name",
]

TEACHER, STUDENT = 0, 1
#: ``bi``: both directions; ``t2s``: teacher stages first; ``s2t``: student stages first.
PATH_MODES = ("bi", "t2s", "s2t")
#: The per-sample terms EA can weight: student KL, mixed-path KLs, L2 terms.
EA_TARGETS = ("kd", "mix_kd", "l2")
BRIDGE_ACTIVATIONS = ("auto", "leaky_relu", "none")
TEACHER_BN = ("batch", "running")


def candidate_paths(num_stages: int, mode: str = "bi") -> list[tuple[int, ...]]:
    """FCFD's mixed paths (0 = teacher stage, 1 = student stage), switching once after the
    second stage or later: with 4 stages and ``"bi"``, ``(0,0,1,1), (0,0,0,1), (1,1,0,0),
    (1,1,1,0)``."""
    if mode not in PATH_MODES:
        raise ValueError(f"path_mode must be one of {PATH_MODES}, got {mode!r}")
    s = int(num_stages)
    t2s = [(TEACHER,) * k + (STUDENT,) * (s - k) for k in range(2, s)]
    s2t = [(STUDENT,) * k + (TEACHER,) * (s - k) for k in range(2, s)]
    return {"bi": t2s + s2t, "t2s": t2s, "s2t": s2t}[mode]


def path_name(path: Sequence[int]) -> str:
    """``(0, 0, 1, 1) -> "ttss"`` (t: a teacher stage, s: a student stage)."""
    return "".join("ts"[m] for m in path)


def _switch(path: Sequence[int]) -> int:
    """Index of the first stage run by the other network."""
    return next(i for i, m in enumerate(path) if m != path[0])


def make_bridge(
    in_channels: int,
    out_channels: int,
    in_size: Sequence[int],
    out_size: Sequence[int],
    activation: bool,
) -> nn.Sequential | None:
    """Conv + BN (+ LeakyReLU(0.1) when the target network's stages expect post-ReLU inputs).

    Same size: 3x3 conv; source twice as large: 3x3 conv with stride 2; half as large: 4x4
    transposed conv with stride 2. Any other size ratio returns ``None``. Convolutions are
    Kaiming-normal (fan-out) initialised; the transposed one keeps PyTorch's default, as FCFD's
    code does.
    """
    (hi, wi), (ho, wo) = tuple(in_size), tuple(out_size)
    if (hi, wi) == (ho, wo):
        conv: nn.Module = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    elif (hi, wi) == (2 * ho, 2 * wo):
        conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
    elif (2 * hi, 2 * wi) == (ho, wo):
        conv = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
    else:
        return None
    if isinstance(conv, nn.Conv2d):
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    layers = [conv, nn.BatchNorm2d(out_channels)]
    if activation:
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class PerItemValues(nn.Module):
    """The identity loss: ``PerItemValues()(values)`` reduces per-item values computed elsewhere.

    Wrapped in :class:`eakd.EntropyAdaptive`, it weights values a multi-term method computed
    itself (FCFD's ``ea_targets``): ``ea(values, None, logits=(student_logits, teacher_logits))``.
    """

    per_item = True

    def forward(
        self,
        values: torch.Tensor,
        teacher: Any = None,
        target: Any = None,
        *,
        weight: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        reduction: str = "mean",
        num_items: int | float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        return reduce(values, weight=weight, mask=mask, reduction=reduction, num_items=num_items)


class _PathStats(nn.Module):
    """Running statistics of a list of BatchNorm layers, kept for one mixed path."""

    def __init__(self, bns: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:
        super().__init__()
        for j, bn in enumerate(bns):
            dev = bn.running_mean.device
            self.register_buffer(f"mean{j}", torch.zeros(bn.num_features, device=dev))
            self.register_buffer(f"var{j}", torch.ones(bn.num_features, device=dev))
            self.register_buffer(f"count{j}", torch.zeros((), dtype=torch.long, device=dev))

    def stats(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return getattr(self, f"mean{j}"), getattr(self, f"var{j}"), getattr(self, f"count{j}")


@dataclass
class FCFDOutput:
    """What one FCFD forward computed.

    ``loss``: the reduced distillation loss (no cross-entropy; the L2 warm-up applied);
    ``student_logits`` (with gradient) and ``teacher_logits`` (detached) of the plain paths;
    ``path_logits``: the sampled mixed paths' logits by name; ``per_item``: the detached
    per-sample sum of the ``ea_targets`` terms (what a weighting multiplies); ``weights``: the
    weights used (``None`` without a weighting); ``terms``: detached batch means of ``kd``,
    ``mix_kd`` and ``l2``, each with its coefficient.
    """

    loss: torch.Tensor
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    path_logits: dict[str, torch.Tensor]
    per_item: torch.Tensor
    weights: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


def _run_stage(net: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
    """Stage ``index`` in FCFD's split: ``fcfd_stage`` where the model defines FCFD's own
    (see :mod:`eakd.models.base`), else ``forward_stage``."""
    stage = getattr(net, "fcfd_stage", None) or net.forward_stage
    return stage(index, x)


def _run_head(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    head = getattr(net, "fcfd_head", None) or net.forward_head
    return head(x)


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def _stage_info(model: nn.Module, input_size: int):
    """Per stage: output shape (C, H, W), whether it is non-negative (post-ReLU), and the
    BatchNorm layers it runs; plus the BatchNorm layers of the head."""
    groups: list[list[nn.Module]] = []

    def hook(module, _inputs, _output):
        if module not in groups[-1]:
            groups[-1].append(module)

    handles = [bn.register_forward_hook(hook) for bn in _bn_layers(model)]

    def run(m, x):
        outs = []
        for i in range(m.num_stages):
            groups.append([])
            x = _run_stage(m, i, x)
            outs.append(x)
        groups.append([])
        _run_head(m, x)
        return outs

    try:
        outs = probe(model, input_size, run)
    finally:
        for h in handles:
            h.remove()
    shapes = [tuple(o.shape[1:]) for o in outs]
    nonneg = [bool((o >= 0).all()) for o in outs]
    return shapes, nonneg, groups[:-1], groups[-1]


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def _pooled_relu(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(F.relu(x), 1).flatten(1)


@register_loss("fcfd")
class FCFDLoss(nn.Module):
    r"""FCFD's bridges, mixed paths and losses, per sample.

    .. math::
        \ell_n = \lambda_{kd}\,\mathrm{KL}_T(s \leftarrow t)_n
               + \lambda_{mix} \sum_{p \in \text{2 mixed paths}} \mathrm{KL}_T(p \leftarrow t)_n
               + \lambda_{L2}\,\mathrm{warm}(e) \sum_{i \ge 1} \sum_{f} \mathrm{MSE}_n(f, F^T_i)

    with ``KL_T(a <- t)_n = T^2 KL(softmax(z_t/T) || softmax(z_a/T))``, ``f`` running over the
    maps in the teacher's space at stage ``i`` (the bridged student map and the teacher stages of
    mixed paths), the last stage adding ``MSE_n(GAP(ReLU f), GAP(ReLU F^T))``, and
    ``warm(e) = min(1, e / warmup_epochs)`` for epochs ``e`` from 1 (:meth:`set_epoch`). With a
    ``weighting`` the ``ea_targets`` terms are multiplied by its per-sample weights, and every
    term is reduced by :func:`eakd.core.reduce`. Cross-entropy on the student stays the
    caller's (weight 1 in FCFD). Train with Nesterov SGD as FCFD does.

    The models are used, not owned: they are not submodules (the caller trains the student and
    keeps the teacher frozen), so ``parameters()``/``state_dict()`` hold only the bridges and
    the per-path BatchNorm statistics. Both models need the zoo's stage interface:
    ``num_stages``, ``forward_stage(i, x)`` and ``forward_head(x) -> (logits, pooled)``.

    Args:
        student, teacher: the two networks, with the same number of stages whose spatial sizes
            differ by a factor 1 or 2 at every stage past the stem.
        temperature: ``T`` of the KL terms (CIFAR 4, 8 for ShuffleV2 students; ImageNet 1).
        kl_weight, mix_weight, l2_weight: ``lambda_kd`` (1), ``lambda_mix`` (1; 0.2 for the WRN
            pairs) and ``lambda_L2`` (5; ImageNet 0.02).
        warmup_epochs: linear warm-up of the L2 terms (20).
        num_paths: mixed paths sampled per call, without replacement (2).
        path_mode: ``"bi"`` (both directions), ``"t2s"`` or ``"s2t"``.
        ea_targets: the terms a weighting multiplies, any of ``"kd"``, ``"mix_kd"``, ``"l2"``
            (default the KL terms; the paper does not say).
        teacher_bn: ``"batch"``: during training the teacher's BatchNorm layers normalise with
            batch statistics, as FCFD's teacher left in train mode does, while their running
            statistics stay untouched; ``"running"``: the teacher's own forward uses its
            running statistics. Either way, the teacher stages of mixed paths normalise with
            their path's own statistics (batch statistics while training).
        bridge_activation: ``"auto"`` appends LeakyReLU(0.1) to a bridge when the target
            network's map at that stage is non-negative (post-ReLU, FCFD's "afterrelu");
            ``"leaky_relu"`` always; ``"none"`` never.
        input_size: spatial size of the dummy forward that reads the stage shapes.

    Raises:
        ValueError: when the stages cannot be bridged (the message names both architectures
            and the stage shapes found).
    """

    input_kind = "models"
    per_item = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        temperature: float = 4.0,
        kl_weight: float = 1.0,
        mix_weight: float = 1.0,
        l2_weight: float = 5.0,
        warmup_epochs: int = 20,
        num_paths: int = 2,
        path_mode: str = "bi",
        ea_targets: Sequence[str] = ("kd", "mix_kd"),
        teacher_bn: str = "batch",
        bridge_activation: str = "auto",
        input_size: int = 32,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        for name, value in (("kl_weight", kl_weight), ("mix_weight", mix_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if l2_weight < 0:
            raise ValueError(f"l2_weight must be >= 0, got {l2_weight}")
        if isinstance(ea_targets, str):
            ea_targets = (ea_targets,)
        bad = [t for t in ea_targets if t not in EA_TARGETS]
        if bad or not ea_targets:
            raise ValueError(
                f"ea_targets must be a non-empty subset of {EA_TARGETS}, got {list(ea_targets)}"
            )
        if teacher_bn not in TEACHER_BN:
            raise ValueError(f"teacher_bn must be one of {TEACHER_BN}, got {teacher_bn!r}")
        if bridge_activation not in BRIDGE_ACTIVATIONS:
            raise ValueError(
                f"bridge_activation must be one of {BRIDGE_ACTIVATIONS}, got {bridge_activation!r}"
            )
        for role, model in (("student", student), ("teacher", teacher)):
            missing = [
                a for a in ("num_stages", "forward_stage", "forward_head") if not hasattr(model, a)
            ]
            if not isinstance(model, nn.Module) or missing:
                raise TypeError(
                    f"FCFD runs the {role} stage by stage: {arch_name(model)} lacks "
                    f"{', '.join(missing) or 'nn.Module'} (the eakd.models stage interface)"
                )
        self.temperature = float(temperature)
        self.kl_weight = float(kl_weight)
        self.mix_weight = float(mix_weight)
        self.l2_weight = float(l2_weight)
        self.warmup_epochs = int(warmup_epochs)
        self.ea_targets = tuple(dict.fromkeys(ea_targets))
        self.teacher_bn = teacher_bn
        self.path_mode = path_mode
        self.epoch: int | None = None
        # used, not owned: a tuple keeps them out of parameters() and state_dict()
        self._nets = (teacher, student)

        t_shapes, t_nonneg, t_groups, t_head = _stage_info(teacher, input_size)
        s_shapes, s_nonneg, s_groups, s_head = _stage_info(student, input_size)

        def mismatch(why: str) -> ValueError:
            return tap_error("fcfd", student, teacher, s_shapes, t_shapes, why)

        for role, shapes in (("student", s_shapes), ("teacher", t_shapes)):
            if any(len(s) != 3 for s in shapes):
                raise mismatch(f"the {role}'s stages are not (N, C, H, W) maps")
        if len(s_shapes) != len(t_shapes):
            raise mismatch(
                f"the student has {len(s_shapes)} stages and the teacher {len(t_shapes)}; FCFD "
                "splices the networks stage by stage"
            )
        self.num_stages = n = len(s_shapes)
        if n < 3:
            raise mismatch("FCFD needs at least 3 stages")
        self.candidates = candidate_paths(n, path_mode)
        if not 0 <= num_paths <= len(self.candidates):
            raise ValueError(
                f"num_paths must be in [0, {len(self.candidates)}] for {n} stages and "
                f"path_mode={path_mode!r}, got {num_paths}"
            )
        self.num_paths = int(num_paths)

        def bridge(src, dst, i, target_nonneg):
            act = {"auto": target_nonneg, "leaky_relu": True, "none": False}[bridge_activation]
            shapes = {STUDENT: s_shapes, TEACHER: t_shapes}
            (cin, *hw_in), (cout, *hw_out) = shapes[src][i], shapes[dst][i]
            b = make_bridge(cin, cout, hw_in, hw_out, act)
            if b is None:
                raise mismatch(
                    f"at stage {i} the maps are {describe_shapes([s_shapes[i]])} (student) and "
                    f"{describe_shapes([t_shapes[i]])} (teacher); a bridge needs equal sizes or "
                    "a factor of 2",
                )
            return b

        # student -> teacher at every stage past the stem (the L2 terms use them all); teacher ->
        # student only where a candidate path switches to the student
        self.to_teacher = nn.ModuleDict(
            {str(i): bridge(STUDENT, TEACHER, i, t_nonneg[i]) for i in range(1, n)}
        )
        t2s_stages = sorted({_switch(p) - 1 for p in self.candidates if p[0] == TEACHER})
        self.to_student = nn.ModuleDict(
            {str(i): bridge(TEACHER, STUDENT, i, s_nonneg[i]) for i in t2s_stages}
        )
        device = next(iter(student.parameters()), torch.empty(0)).device
        self.to(device)

        # one set of running statistics per mixed-path prefix (a stage run after the switch);
        # the last stage's set also covers the head of the network that runs it
        groups = {TEACHER: (t_groups, t_head), STUDENT: (s_groups, s_head)}
        self._path_bns: dict[str, list[nn.Module]] = {}
        stats = {}
        for p in self.candidates:
            for i in range(_switch(p), n):
                stage_bns, head_bns = groups[p[i]]
                bns = list(stage_bns[i]) + (list(head_bns) if i == n - 1 else [])
                key = path_name(p[: i + 1])
                self._path_bns[key] = bns
                stats[key] = _PathStats(bns)
        self.path_stats = nn.ModuleDict(stats)
        self._teacher_bns = _bn_layers(teacher)
        self.last_paths: list[str] = []

    # -- schedule ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Epochs count from 1; the L2 terms ramp as ``min(1, epoch / warmup_epochs)``. Until
        this is called the L2 terms have their full weight."""
        self.epoch = int(epoch)

    def warmup_factor(self) -> float:
        if self.epoch is None or self.warmup_epochs <= 0:
            return 1.0
        return min(1.0, self.epoch / self.warmup_epochs)

    # -- paths and statistics ------------------------------------------------------------
    def sample_paths(self) -> list[tuple[int, ...]]:
        """``num_paths`` candidates drawn without replacement from the global torch generator
        (seeded by the training loop, so resumed and distributed runs draw the same paths)."""
        if self.num_paths == 0:
            return []
        idx = torch.randperm(len(self.candidates))[: self.num_paths].sort().values
        return [self.candidates[int(i)] for i in idx]

    def _resolve_paths(self, paths: Sequence[str] | None) -> list[tuple[int, ...]]:
        if paths is None:
            return self.sample_paths()
        by_name = {path_name(p): p for p in self.candidates}
        out = []
        for name in paths:
            if name not in by_name:
                raise ValueError(f"unknown path {name!r}; candidates: {', '.join(by_name)}")
            out.append(by_name[name])
        return out

    @contextmanager
    def _path_statistics(self, prefix: Sequence[int]) -> Iterator[None]:
        """Swap in the prefix's own running statistics (batch statistics while training)."""
        key = path_name(prefix)
        bns, stats = self._path_bns[key], self.path_stats[key]
        saved = [
            (bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.training) for bn in bns
        ]
        try:
            for j, bn in enumerate(bns):
                bn.running_mean, bn.running_var, bn.num_batches_tracked = stats.stats(j)
                bn.training = self.training
            yield
        finally:
            for bn, (mean, var, count, flag) in zip(bns, saved, strict=True):
                bn.running_mean, bn.running_var, bn.num_batches_tracked = mean, var, count
                bn.training = flag

    @contextmanager
    def _teacher_statistics(self) -> Iterator[None]:
        """``teacher_bn="batch"`` while training: batch statistics, running ones untouched."""
        if self.teacher_bn != "batch" or not self.training:
            yield
            return
        saved = [(bn.running_mean, bn.running_var) for bn in self._teacher_bns]
        try:
            for bn in self._teacher_bns:
                bn.running_mean = None  # an eval-mode BN without running stats uses the batch's
                bn.running_var = None
            yield
        finally:
            for bn, (mean, var) in zip(self._teacher_bns, saved, strict=True):
                bn.running_mean, bn.running_var = mean, var

    @staticmethod
    def _stages(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(net.num_stages):
            x = _run_stage(net, i, x)
            outs.append(x)
        return outs

    # -- the loss ------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        weighting: Any = None,
        reduction: str = "mean",
        paths: Sequence[str] | None = None,
    ) -> FCFDOutput:
        """Run the teacher, student and mixed paths on ``images`` and compute the loss.

        Args:
            images: the input batch ``(N, C, H, W)``.
            target: class indices, passed to ``weighting`` (FCFD's terms do not use labels).
            weighting: ``None`` (plain FCFD) or a per-item weighting called as
                ``weighting(values, None, target, logits=(student_logits, teacher_logits),
                reduction=...)``, e.g. ``EntropyAdaptive(PerItemValues(), ea)``.
            reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample ``(N,)``).
            paths: mixed paths by name (e.g. ``["ttss", "sstt"]``) instead of sampling.
        """
        teacher, student = self._nets
        n = self.num_stages
        mixed = self._resolve_paths(paths)
        self.last_paths = [path_name(p) for p in mixed]

        with torch.no_grad(), self._teacher_statistics():
            t_maps = self._stages(teacher, images)
            t_logits = _run_head(teacher, t_maps[-1])[0].detach()
        s_maps = self._stages(student, images)
        s_logits = _run_head(student, s_maps[-1])[0]

        # maps in the teacher's space per stage: the bridged student map first, then mixed paths'
        in_teacher = {i: [self.to_teacher[str(i)](s_maps[i])] for i in range(1, n)}
        path_logits: dict[str, torch.Tensor] = {}
        for p in mixed:
            k = _switch(p)
            if p[0] == STUDENT:
                x = in_teacher[k - 1][0]
            else:
                x = self.to_student[str(k - 1)](t_maps[k - 1])
            for i in range(k, n):
                net = self._nets[p[i]]
                with self._path_statistics(p[: i + 1]):
                    x = _run_stage(net, i, x)
                    if i == n - 1:
                        path_logits[path_name(p)] = _run_head(net, x)[0]
                if p[i] == TEACHER:
                    in_teacher[i].append(x)

        t = self.temperature
        kd = kd_per_item(s_logits, t_logits, t)[0]
        mix = torch.zeros_like(kd)
        for z in path_logits.values():
            mix = mix + kd_per_item(z, t_logits, t)[0]
        l2 = torch.zeros(images.shape[0], device=kd.device, dtype=torch.float32)
        for i in range(1, n):
            for f in in_teacher[i]:
                l2 = l2 + _per_sample_mse(f, t_maps[i])
                if i == n - 1:
                    l2 = l2 + _per_sample_mse(_pooled_relu(f), _pooled_relu(t_maps[i]))
        terms = {
            "kd": self.kl_weight * kd,
            "mix_kd": self.mix_weight * mix,
            "l2": (self.l2_weight * self.warmup_factor()) * l2.to(kd.dtype),
        }
        weighted = sum(terms[k] for k in self.ea_targets)
        plain = [terms[k] for k in EA_TARGETS if k not in self.ea_targets]
        weights = None
        if weighting is None:
            loss = reduce(weighted + sum(plain), reduction=reduction)
        else:
            logits = (s_logits.detach(), t_logits)
            loss = weighting(weighted, None, target, logits=logits, reduction=reduction)
            stats = getattr(weighting, "last_stats", None)
            weights = stats.weights if stats is not None else None
            if plain:
                loss = loss + reduce(sum(plain), reduction=reduction)
        if torch.is_grad_enabled():
            loss = loss + self._idle_bridges_zero(mixed)
        return FCFDOutput(
            loss=loss,
            student_logits=s_logits,
            teacher_logits=t_logits,
            path_logits=path_logits,
            per_item=weighted.detach(),
            weights=weights,
            terms={k: v.detach().mean() for k, v in terms.items()},
        )

    def _idle_bridges_zero(self, mixed: Sequence[tuple[int, ...]]) -> torch.Tensor | float:
        """0 times the teacher->student bridges no sampled path used: every parameter then takes
        part in every step (DistributedDataParallel requires it), with a zero gradient."""
        used = {str(_switch(p) - 1) for p in mixed if p[0] == TEACHER}
        idle = [w for key, b in self.to_student.items() if key not in used for w in b.parameters()]
        if not idle:
            return 0.0
        return 0.0 * sum(w.sum() for w in idle)

    def extra_repr(self) -> str:
        return (
            f"stages={self.num_stages}, temperature={self.temperature}, kl_weight="
            f"{self.kl_weight}, mix_weight={self.mix_weight}, l2_weight={self.l2_weight}, "
            f"warmup_epochs={self.warmup_epochs}, num_paths={self.num_paths}, path_mode="
            f"{self.path_mode!r}, ea_targets={list(self.ea_targets)}, teacher_bn="
            f"{self.teacher_bn!r}"
        )
