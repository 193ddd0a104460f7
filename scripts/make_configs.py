"""Write every shipped classification config (configs/cifar100, tiny_imagenet, imagenet,
tiny_imagenet_transformers).

Run ``python scripts/make_configs.py`` after editing the tables below (``--out DIR`` writes the
tree under ``DIR`` instead of ``configs/``); the YAML files are committed so users can read and
edit them directly, and a test regenerates them and compares byte for byte. Reported numbers:
EA-KD paper Tables 1-5, 8 and 9; recipes: the mdistiller / CRD CIFAR-100 recipe, each
method's own defaults; DKD's per-pair beta from mdistiller's configs, 6 for wrn_28_4 ->
wrn_16_2 as for the other WRN pairs.

Every config that reproduces a number of the paper runs ``ea.preset: official``: the released
EA-KD code's H_ub, T' and weight logits, resolved per method
by ``EASettings.resolve`` and saved in the run. The YAML keeps the paper's values
(``temperature``, ``max_entropy`` null = log C), so ``ea.preset=paper`` runs the paper's
formulas. The third header line of an EA config says what its preset resolves to. Two kinds
run ``paper``: the Table 1/9 KD weights the released code lacks, and ImageNet EA-ReviewKD,
which has no number in the paper.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1] / "configs"
CKPT = "download_ckpts/cifar_teachers/{}_vanilla/ckpt_epoch_240.pth"
TINY_CKPT = "download_ckpts/tiny_imagenet_teachers/resnet32x4.pth"
IMAGENET_TEACHER = {
    "name": "imagenet_resnet34",
    "checkpoint": "download_ckpts/resnet34-333f7ec4.pth",
}
TORCHRUN = "torchrun --nproc_per_node 8 -m eakd.cli train"


class Flow(list):
    """A list the YAML writes on one line (``[a, b, c]``): the per-channel statistics."""


class Dumper(yaml.SafeDumper):
    pass


Dumper.add_representer(
    Flow, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)

LABELS = {
    "kd": "KD",
    "kd_ls": "KD+LS",
    "ctkd": "CTKD",
    "dkd": "DKD",
    "dkd_ls": "DKD+LS",
    "mld": "MLD",
    "mld_ls": "MLD+LS",
    "reviewkd": "ReviewKD",
    "fcfd": "FCFD",
}

# (teacher, student, student lr, DKD beta) and Table 2's reported top-1 per method: (base, EA)
PAIRS = [
    ("resnet32x4", "resnet8x4", 0.05, 8.0),
    ("wrn_28_4", "wrn_16_2", 0.05, 6.0),
    ("wrn_40_2", "wrn_40_1", 0.05, 6.0),
    ("vgg13", "vgg8", 0.05, 6.0),
    ("vgg13", "MobileNetV2", 0.01, 6.0),
    ("ResNet50", "MobileNetV2", 0.01, 8.0),
    ("resnet32x4", "ShuffleV2", 0.01, 8.0),
]
TABLE2 = {
    "kd": [
        (73.33, 75.46),
        (75.04, 75.79),
        (73.54, 74.38),
        (72.98, 74.08),
        (67.37, 69.17),
        (67.35, 69.67),
        (74.45, 75.91),
    ],
    "ctkd": [
        (73.91, 75.18),
        (75.29, 75.72),
        (73.93, 74.03),
        (73.52, 73.79),
        (68.46, 69.19),
        (68.47, 69.38),
        (75.31, 76.02),
    ],
    "dkd": [
        (76.32, 76.80),
        (76.45, 76.74),
        (74.81, 74.98),
        (74.68, 75.07),
        (69.71, 70.39),
        (70.35, 70.98),
        (77.07, 77.72),
    ],
    "mld": [
        (77.08, 77.65),
        (76.83, 77.47),
        (75.35, 75.77),
        (75.18, 75.28),
        (70.57, 70.72),
        (71.04, 71.43),
        (78.44, 78.85),
    ],
    "mld_ls": [
        (78.28, 78.38),
        (77.20, 77.60),
        (75.56, 75.78),
        (75.22, 75.38),
        (70.94, 70.67),
        (71.19, 71.36),
        (78.76, 79.13),
    ],
    "reviewkd": [
        (75.63, 76.10),
        (76.39, 76.95),
        (74.45, 75.43),
        (74.45, 74.56),
        (70.37, 70.55),
        (69.89, 69.80),
        (77.78, 78.22),
    ],
    "fcfd": [
        (76.62, 77.50),
        (77.00, 77.15),
        (75.46, 75.30),
        (75.22, 75.36),
        (70.65, 71.02),
        (71.00, 71.97),
        (78.18, 78.75),
    ],
}

# mdistiller's WRN forward updates its last BatchNorms twice per step; the published WRN
# student numbers of the mdistiller-based methods were trained that way (ECOSYSTEM.md 2.4).
# FCFD has its own code base, whose WRN does not.
WRN_KWARGS = {name: {"kwargs": {"double_bn_update": True}} for name in ("wrn_16_2", "wrn_40_1")}
MDISTILLER_WRN = ("kd", "ctkd", "dkd", "mld", "mld_ls", "reviewkd")

#: MLD's own CIFAR-100 learning rates (its released configs): 0.025, but 0.0025 for MobileNetV2
#: students and 0.01 for ShuffleV2 students.
MLD_LR = {"MobileNetV2": 0.0025, "ShuffleV2": 0.01}

#: ReviewKD's loss weight per student (mdistiller's CIFAR configs): 8 for ShuffleV2, else 5.
REVIEWKD_WEIGHT = {"ShuffleV2": 8.0}
#: FCFD's per-pair settings (its CIFAR-100 scripts): T = 8 for ShuffleV2, mix-KL weight 0.2
#: for the WRN students.
FCFD_TEMPERATURE = {"ShuffleV2": 8.0}
FCFD_MIX_WEIGHT = {"wrn_16_2": 0.2, "wrn_40_1": 0.2}

#: The paper's H_ub = log C per dataset, as the headers write it.
LOG_C = {"cifar100": "log 100", "tiny_imagenet": "log 200", "imagenet": "log 1000"}
#: Methods whose EA variant the released EA-KD code does not contain:
#: ``official`` leaves them at the paper's formulas.
NOT_RELEASED = ("ctkd", "fcfd")


def preset_note(dataset: str, method: str, t_prime: float, standardize: bool = False) -> str:
    """The header line saying what ``ea.preset: official`` runs for ``method`` on ``dataset``
    (H_ub, T' and the weight logits of the released code)."""
    paper_hub = LOG_C[dataset]
    if method in NOT_RELEASED:
        return (
            f"preset: official ({LABELS[method]} is not in the released EA-KD code, so it "
            f"resolves to the paper's formulas: H_ub = {paper_hub}, T' = {t_prime:g})"
        )
    if method in ("kd", "dkd"):  # KD.py, DKD.py: 100 unless ImageNet
        hub = "log 1000" if dataset == "imagenet" else "100"
    else:  # KD_ours.py (MLD, MLD+LS), ReviewKD.py: log(100) hard-coded
        hub = "log 100"
    t_code = 3.0 if method in ("dkd", "mld") else t_prime  # DKD.py, KD_ours.py ignore t
    std_code = method == "dkd" and standardize
    released = [f"H_ub = {hub}", f"T' = {t_code:g}"]
    paper = []
    if hub != paper_hub:
        paper.append(f"H_ub = {paper_hub}")
    if t_code != t_prime:
        released[-1] += f" whatever the configured {t_prime:g}"
        paper.append(f"T' = {t_prime:g}")
    if std_code:
        released.append("entropies of the standardised logits")
        paper.append("raw logits")
    elif standardize:
        released.append("entropies of the raw logits")
    code = f"preset: official (the released EA-KD code: {', '.join(released)}"
    if not paper:
        return code + "; the paper's formulas give the same)"
    return code + f"); the paper's formulas ({', '.join(paper)}): ea.preset=paper"


def method_block(method: str, student: str, beta: float, ea: bool) -> tuple[dict, dict]:
    """(method section, data overrides) of one method on CIFAR-100."""
    if method == "kd":
        return {"name": "kd", "ce_weight": 0.1, "kd_weight": 0.9, "loss": {"temperature": 4.0}}, {}
    if method == "ctkd":
        m = {
            "name": "ctkd",
            "ce_weight": 0.1,
            "kd_weight": 0.9,
            "loss": {"base": "kd", "curriculum_epochs": 10},
        }
        return m, {}
    if method == "dkd":
        m = {
            "name": "dkd",
            "ce_weight": 1.0,
            "kd_weight": 1.0,
            "warmup_epochs": 20,
            "loss": {"alpha": 1.0, "beta": beta, "temperature": 4.0},
        }
        return m, {}
    if method in ("mld", "mld_ls"):
        ls = method == "mld_ls"
        # EA-MLD+LS lowers the KD weight from 9 to 4 (the paper's only tuned value)
        kd_weight = (4.0 if ea else 9.0) if ls else 0.9
        m = {
            "name": "mld",
            "ce_weight": 0.1,
            "kd_weight": kd_weight,
            "mld_official": True,
            "loss": {"temperature": 2.0 if ls else 4.0, "standardize": ls},
        }
        return m, {"augment": "mld"}
    if method == "reviewkd":
        m = {
            "name": "reviewkd",
            "ce_weight": 1.0,
            "kd_weight": REVIEWKD_WEIGHT.get(student, 5.0),
            "warmup_epochs": 20,
            "loss": {},
        }
        return m, {}
    if method == "fcfd":
        m = {
            "name": "fcfd",
            "ce_weight": 1.0,
            "kd_weight": 1.0,
            "warmup_epochs": 0,
            "loss": {
                "temperature": FCFD_TEMPERATURE.get(student, 4.0),
                "kl_weight": 1.0,
                "mix_weight": FCFD_MIX_WEIGHT.get(student, 1.0),
                "l2_weight": 5.0,
                "warmup_epochs": 20,
                "num_paths": 2,
                "path_mode": "bi",
                "ea_targets": ["kd", "mix_kd"],
            },
        }
        return m, {}
    raise ValueError(method)


def cifar_config(teacher, student, lr, beta, method, ea, preset="official", extra=None):
    m, data_extra = method_block(method, student, beta, ea)
    is_mld = method.startswith("mld")
    wrn = WRN_KWARGS.get(student, {}) if method in MDISTILLER_WRN else {}
    cfg = {
        "name": f"cifar100_{'ea_' if ea else ''}{method}_{teacher}_{student}",
        "output_dir": "runs",
        "teacher": {"name": teacher, "checkpoint": CKPT.format(teacher)},
        "student": {"name": student, **wrn},
        "data": {
            "name": "cifar100",
            "root": "data",
            "batch_size": 64,
            "num_workers": 4,
            **data_extra,
        },
        "method": m,
        "ea": {"enabled": ea, "temperature": 3.0, "preset": preset},
        "optim": {
            "lr": MLD_LR.get(student, 0.025) if is_mld else lr,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "multistep",
            "milestones": [150, 180, 210],
            "gamma": 0.1,
        },
        "train": {"epochs": 480 if is_mld else 240, "seed": 0},
    }
    if method == "fcfd":  # FCFD's released scripts use Nesterov momentum
        cfg["optim"]["nesterov"] = True
    if extra:
        for section, values in extra.items():
            cfg[section].update(values)
    return cfg


def render(
    rel: str,
    cfg: dict,
    note: str,
    preset: str | None,
    launcher: str = "eakd train",
    comments: tuple[str, ...] = (),
) -> str:
    """The file text: the command that runs it, the paper's number, what the preset runs, then
    ``comments`` (one header line each)."""
    lines = [f"# {launcher} configs/{rel}", f"# {note}"]
    if preset:
        lines.append(f"# {preset}")
    lines += [f"# {line}" for line in comments]
    return "\n".join(lines) + "\n" + yaml.dump(cfg, Dumper=Dumper, sort_keys=False)


def cifar100_configs() -> dict[str, str]:
    """Table 2 (seven pairs x seven methods, with and without EA) and the Table 1/8/9
    ablations on ResNet32x4 -> ResNet8x4."""
    out = {}
    for method, numbers in TABLE2.items():
        for (teacher, student, lr, beta), (base, ea_num) in zip(PAIRS, numbers, strict=True):
            for ea in (False, True):
                cfg = cifar_config(teacher, student, lr, beta, method, ea)
                rel = f"cifar100/{'ea_' if ea else ''}{method}/{teacher}_{student}.yaml"
                label = ("EA-" if ea else "") + LABELS[method]
                note = (
                    f"paper (Table 2): {label} {teacher} -> {student} "
                    f"top-1 {ea_num if ea else base:.2f}%"
                )
                base_method = "mld" if method == "mld_ls" else method
                preset = preset_note("cifar100", base_method, 3.0, method == "mld_ls")
                out[rel] = render(rel, cfg, note, preset if ea else None)
    # Table 8: entropy temperature T' for EA-KD (the released KD.py passes T' through)
    for t_prime, value in ((2.0, 73.90), (3.0, 75.46), (4.0, 75.22)):
        cfg = cifar_config(
            "resnet32x4", "resnet8x4", 0.05, 8.0, "kd", True, extra={"ea": {"temperature": t_prime}}
        )
        cfg["name"] = f"cifar100_ablation_tprime{int(t_prime)}"
        rel = f"cifar100/ablation/ea_kd_tprime{int(t_prime)}.yaml"
        note = f"paper (Table 8): EA-KD resnet32x4 -> resnet8x4 with T'={t_prime:g}: {value:.2f}%"
        out[rel] = render(rel, cfg, note, preset_note("cifar100", "kd", t_prime))
    # Tables 1 and 9: KD reweighted by one factor. The released code has w_ea only; the other
    # weights follow the paper, whose H_ub is log 100 (stated for Table 1's inverted weights;
    # with the released KD.py's 100, w_interact would be ~H_T H_S / 100 and the inverted
    # weights ~100: nearly no KD, or a ~100x KD weight).
    kinds = {
        "base": 75.14,
        "interact": 74.76,
        "ea": 75.46,
        "student": 74.76,
        "inverse_teacher": 72.73,
        "inverse_student": 68.90,
    }
    for kind, value in kinds.items():
        preset = "official" if kind == "ea" else "paper"
        cfg = cifar_config(
            "resnet32x4", "resnet8x4", 0.05, 8.0, "kd", True, preset, extra={"ea": {"kind": kind}}
        )
        cfg["name"] = f"cifar100_ablation_kind_{kind}"
        rel = f"cifar100/ablation/ea_kd_kind_{kind}.yaml"
        source = (
            "Table 1" if kind in ("student", "inverse_teacher", "inverse_student") else "Table 9"
        )
        note = f"paper ({source}): KD reweighted by w_{kind} resnet32x4 -> resnet8x4: {value:.2f}%"
        line = (
            preset_note("cifar100", "kd", 3.0)
            if kind == "ea"
            else f"preset: paper (w_{kind} is not in the released EA-KD code, which has w_ea "
            "only: the paper's H_ub = log 100, T' = 3)"
        )
        out[rel] = render(rel, cfg, note, line)
    # Table 9: FCFD reweighted by one factor (EA-FCFD with ea.kind)
    for kind, value in {"base": 77.50, "interact": 77.42, "ea": 77.44}.items():
        cfg = cifar_config(
            "resnet32x4", "resnet8x4", 0.05, 8.0, "fcfd", True, extra={"ea": {"kind": kind}}
        )
        cfg["name"] = f"cifar100_ablation_fcfd_kind_{kind}"
        rel = f"cifar100/ablation/ea_fcfd_kind_{kind}.yaml"
        note = f"paper (Table 9): FCFD reweighted by w_{kind} resnet32x4 -> resnet8x4: {value:.2f}%"
        out[rel] = render(rel, cfg, note, preset_note("cifar100", "fcfd", 3.0))
    return out


def tiny_imagenet_configs() -> dict[str, str]:
    """Table 3: ResNet32x4 -> ResNet8x4 on Tiny-ImageNet (200 classes), the CIFAR recipes."""
    out = {}
    table3 = {
        "kd": (56.00, 59.39),
        "mld": (61.91, 62.65),
        "mld_ls": (61.36, 62.41),
        "fcfd": (60.12, 60.51),
    }
    for method, (base, ea_num) in table3.items():
        for ea in (False, True):
            cfg = cifar_config("resnet32x4", "resnet8x4", 0.05, 8.0, method, ea)
            cfg["name"] = f"tiny_imagenet_{'ea_' if ea else ''}{method}_resnet32x4_resnet8x4"
            cfg["data"].update(name="tiny_imagenet", root="data/tiny-imagenet-200")
            cfg["teacher"]["checkpoint"] = TINY_CKPT
            rel = f"tiny_imagenet/{'ea_' if ea else ''}{method}/resnet32x4_resnet8x4.yaml"
            label = ("EA-" if ea else "") + LABELS[method]
            note = f"paper (Table 3): {label} top-1 {ea_num if ea else base:.2f}%"
            if method == "fcfd":
                note += " (the CIFAR-100 FCFD recipe on Tiny-ImageNet's 64 px images)"
            base_method = "mld" if method == "mld_ls" else method
            preset = preset_note("tiny_imagenet", base_method, 3.0, method == "mld_ls")
            out[rel] = render(rel, cfg, note, preset if ea else None)
    return out


#: Table 5's transformer teachers: config stem -> (label, timm weights, timm's normalisation of
#: them, the paper's top-1 of teacher, KD and EA-KD)
VIT_STATS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
IMAGENET_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
TRANSFORMERS = {
    "vit_b16": (
        "ViT-B/16",
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        VIT_STATS,
        (71.12, 54.70, 57.53),
    ),
    "deit_b": ("DeiT-B", "deit_base_patch16_224.fb_in1k", IMAGENET_STATS, (85.55, 56.30, 58.36)),
    "swin_b": (
        "Swin-B",
        "swin_base_patch4_window7_224.ms_in22k_ft_in1k",
        IMAGENET_STATS,
        (86.30, 56.15, 59.58),
    ),
}
FINETUNE_RECIPE = (
    "recipe: the ViT paper's SGD fine-tuning (momentum 0.9, no weight decay, gradient norm "
    "clipped at 1, cosine decay after a linear warm-up), 10 epochs at batch 128, on the "
    "student's 64-px Tiny-ImageNet pipeline resized to 224 px"
)


def transformer_configs() -> dict[str, str]:
    """Table 5: ViT-B/16, DeiT-B and Swin-B teachers of a ResNet8x4 on Tiny-ImageNet (T' = 2 in
    the paper). Each teacher is first fine-tuned from its ImageNet weights (``teacher/``, method
    vanilla); KD and EA-KD read that run's last checkpoint and feed the teacher every 64-px batch
    resized to its 224 px (``teacher.input``)."""
    out = {}
    folder = "tiny_imagenet_transformers"
    for stem, (label, weights, stats, (teacher_acc, kd_acc, ea_acc)) in TRANSFORMERS.items():
        name = f"timm:{weights}"
        spec = {"size": 224, **{k: Flow(v) for k, v in stats.items()}, "interpolation": "bicubic"}
        teacher_name = f"{folder}_teacher_{stem}"
        rel = f"{folder}/teacher/{stem}.yaml"
        cfg = {
            "name": teacher_name,
            "output_dir": "runs",
            "student": {
                "name": name,
                "checkpoint": f"download_ckpts/timm/{weights}/model.safetensors",
                "replace_head": True,
                "input": spec,
            },
            "data": {
                "name": "tiny_imagenet",
                "root": "data/tiny-imagenet-200",
                "batch_size": 128,
                "num_workers": 8,
            },
            "method": {"name": "vanilla"},
            "optim": {
                "lr": 0.01,
                "momentum": 0.9,
                "weight_decay": 0.0,
                "schedule": "cosine",
                "warmup_epochs": 1,
            },
            "train": {"epochs": 10, "seed": 0, "precision": "bf16", "grad_clip": 1.0},
        }
        comments = [
            "the paper does not say how its transformer teachers were trained; this run "
            "fine-tunes ImageNet weights on Tiny-ImageNet",
            f"ImageNet weights: model.safetensors of https://huggingface.co/timm/{weights}, "
            "saved as the checkpoint path below; the 1000-class head is replaced by a fresh "
            "200-class one",
        ]
        if stem == "vit_b16":
            comments.append(
                "the paper's ViT-B (71.12%) is far weaker than its DeiT-B (85.55%), so its "
                "weights or recipe differ from these: compare KD numbers at a matching teacher "
                "accuracy"
            )
        comments.append(FINETUNE_RECIPE)
        note = f"paper (Table 5): teacher {label} top-1 {teacher_acc:.2f}%"
        out[rel] = render(rel, cfg, note, None, comments=tuple(comments))
        teacher_line = (
            f"teacher: {label} fine-tuned on Tiny-ImageNet (paper: {teacher_acc:.2f}%) by "
            f"configs/{rel}; it sees each 64-px batch resized to 224 px"
        )
        for ea in (False, True):
            method = f"{'ea_' if ea else ''}kd"
            cfg = cifar_config(
                "resnet32x4", "resnet8x4", 0.05, 8.0, "kd", ea, extra={"ea": {"temperature": 2.0}}
            )
            cfg["name"] = f"{folder}_{method}_{stem}_resnet8x4"
            cfg["teacher"] = {
                "name": name,
                "checkpoint": f"runs/{teacher_name}/checkpoints/last.pt",
                "input": spec,
            }
            cfg["data"].update(name="tiny_imagenet", root="data/tiny-imagenet-200")
            rel_kd = f"{folder}/{method}/{stem}_resnet8x4.yaml"
            note = (
                f"paper (Table 5): {'EA-' if ea else ''}KD {label} -> ResNet8x4 top-1 "
                f"{ea_acc if ea else kd_acc:.2f}%"
            )
            # KD.py passes the configured T' through and keeps H_ub = 100 off ImageNet
            preset = (
                "preset: official (the released EA-KD code's KD weight: H_ub = 100, T' = 2 as "
                f"configured); the paper's formulas (H_ub = {LOG_C['tiny_imagenet']}): "
                "ea.preset=paper"
            )
            out[rel_kd] = render(
                rel_kd, cfg, note, preset if ea else None, comments=(teacher_line,)
            )
    return out


def imagenet_config(name: str, method: dict, ea: bool, preset: str, **recipe) -> dict:
    """ResNet34 -> ResNet18 with torchvision teacher weights; ``recipe``: batch, lr, epochs."""
    return {
        "name": name,
        "output_dir": "runs",
        "teacher": dict(IMAGENET_TEACHER),
        "student": {"name": "imagenet_resnet18"},
        "data": {
            "name": "imagenet",
            "root": "data/imagenet",
            "batch_size": recipe.get("batch_size", 512),
            "test_batch_size": 256,
            "num_workers": 16,
        },
        "method": method,
        "ea": {"enabled": ea, "temperature": 2.0, "preset": preset},
        "optim": {
            "lr": recipe.get("lr", 0.2),
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "schedule": "multistep",
            "milestones": [30, 60, 90],
            "gamma": 0.1,
        },
        "train": {"epochs": recipe.get("epochs", 100), "seed": 0, "precision": "fp32"},
    }


def imagenet_configs() -> dict[str, str]:
    """Table 4: ResNet34 -> ResNet18 (T' = 2 in the paper), and ReviewKD (no paper number)."""
    out = {}
    kd = {"name": "kd", "ce_weight": 1.0, "kd_weight": 0.5, "loss": {"temperature": 1.0}}
    dkd = {
        "name": "dkd",
        "ce_weight": 1.0,
        "kd_weight": 1.0,
        "warmup_epochs": 1,
        "loss": {"alpha": 1.0, "beta": 0.5, "temperature": 1.0},
    }
    dkd_ls = {
        **dkd,
        "loss": {"alpha": 2.0, "beta": 1.0, "temperature": 1.0, "standardize": True},
    }
    # (method section, epochs, Table 4's (base, EA) top-1; None: no EA run in the table)
    table4 = {
        # the quoted KD baseline (71.03, mdistiller) used CE 0.5; the EA run CE 1.0
        "kd": (kd, 100, (71.03, 71.79)),
        "dkd": (dkd, 100, (71.70, 71.96)),
        "dkd_ls": (dkd_ls, 130, (71.88, 71.99)),
        # the LS code's ImageNet KD+LS: its kd.yaml (CE 1, T 1) with --logit-stand
        # --base-temp 2 --kd-weight 9
        "kd_ls": (
            {**kd, "kd_weight": 9.0, "loss": {"temperature": 2.0, "standardize": True}},
            100,
            (71.42, None),
        ),
    }
    for method, (m, epochs, (base, ea_num)) in table4.items():
        for ea in (False, True) if ea_num is not None else (False,):
            cfg = imagenet_config(
                f"imagenet_{'ea_' if ea else ''}{method}_resnet34_resnet18",
                {**m, "ce_weight": 0.5} if method == "kd" and not ea else m,
                ea,
                "official",
                epochs=epochs,
            )
            rel = f"imagenet/{'ea_' if ea else ''}{method}/resnet34_resnet18.yaml"
            label = ("EA-" if ea else "") + LABELS[method]
            note = (
                f"paper (Table 4): {label} ResNet34 -> ResNet18 top-1 {ea_num if ea else base:.2f}%"
            )
            if method == "kd_ls":
                note += " (the LS code's kd.yaml with --logit-stand --base-temp 2 --kd-weight 9)"
            base_method = method.removesuffix("_ls")
            standardize = bool(m["loss"].get("standardize", False))
            preset = preset_note("imagenet", base_method, 2.0, standardize) if ea else None
            out[rel] = render(rel, cfg, note, preset, TORCHRUN)
    # ReviewKD (mdistiller's ImageNet recipe): not in the paper, so the paper's formulas
    reviewkd = {
        "name": "reviewkd",
        "ce_weight": 1.0,
        "kd_weight": 1.0,
        "warmup_epochs": 1,
        "loss": {"student_preact": True},
    }
    for ea in (False, True):
        cfg = imagenet_config(
            f"imagenet_{'ea_' if ea else ''}reviewkd_resnet34_resnet18",
            reviewkd,
            ea,
            "paper",
            batch_size=256,
            lr=0.1,
        )
        rel = f"imagenet/{'ea_' if ea else ''}reviewkd/resnet34_resnet18.yaml"
        if ea:
            note = (
                "EA-ReviewKD ResNet34 -> ResNet18 (not reported in the paper; ReviewKD 71.61% "
                "(mdistiller))"
            )
            preset = (
                "preset: paper (no table of the paper: H_ub = log 1000, T' = 2; "
                "ea.preset=official gives the released ReviewKD.py's hard-coded H_ub = log 100)"
            )
        else:
            note, preset = "ReviewKD ResNet34 -> ResNet18 top-1 71.61% (mdistiller)", None
        out[rel] = render(rel, cfg, note, preset, TORCHRUN)
    return out


def all_configs() -> dict[str, str]:
    """Every shipped classification config: path under configs/ -> file text."""
    return {
        **cifar100_configs(),
        **tiny_imagenet_configs(),
        **transformer_configs(),
        **imagenet_configs(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT, help="folder to write the tree to (default: configs/)"
    )
    out = parser.parse_args(argv).out
    files = all_configs()
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(files)} configs under {out}")


if __name__ == "__main__":
    main()
