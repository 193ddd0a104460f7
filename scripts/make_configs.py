"""Write the shipped experiment configs (configs/) from the paper's recipes.

Run ``python scripts/make_configs.py`` after editing the tables below; the YAML files are
committed so users can read and edit them directly. Reported numbers: EA-KD paper Tables 2-4,
8 and 9; recipes: METHODS.md section 12 (mdistiller / CRD CIFAR-100 recipe, each method's own
defaults; DKD's per-pair beta from mdistiller's configs, 6 for wrn_28_4 -> wrn_16_2 as for the
other WRN pairs).
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1] / "configs"
CKPT = "download_ckpts/cifar_teachers/{}_vanilla/ckpt_epoch_240.pth"

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
}


WRN_KWARGS = {name: {"kwargs": {"double_bn_update": True}} for name in ("wrn_16_2", "wrn_40_1")}

#: MLD's own CIFAR-100 learning rates (its released configs): 0.025, but 0.0025 for MobileNetV2
#: students and 0.01 for ShuffleV2 students.
MLD_LR = {"MobileNetV2": 0.0025, "ShuffleV2": 0.01}


def method_block(method: str, beta: float, ea: bool) -> tuple[dict, dict]:
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
    raise ValueError(method)


def cifar_config(teacher, student, lr, beta, method, ea, reported, epochs=240, extra=None):
    m, data_extra = method_block(method, beta, ea)
    is_mld = method.startswith("mld")
    cfg = {
        "name": f"cifar100_{'ea_' if ea else ''}{method}_{teacher}_{student}",
        "output_dir": "runs",
        "teacher": {"name": teacher, "checkpoint": CKPT.format(teacher)},
        # mdistiller's WRN forward updates its last BatchNorms twice per step; the published
        # WRN student numbers were trained that way (ECOSYSTEM.md 2.4)
        "student": {"name": student, **WRN_KWARGS.get(student, {})},
        "data": {
            "name": "cifar100",
            "root": "data",
            "batch_size": 64,
            "num_workers": 4,
            **data_extra,
        },
        "method": m,
        "ea": {"enabled": ea, "temperature": 3.0, "preset": "paper"},
        "optim": {
            "lr": MLD_LR.get(student, 0.025) if is_mld else lr,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "multistep",
            "milestones": [150, 180, 210],
            "gamma": 0.1,
        },
        "train": {"epochs": 480 if is_mld else epochs, "seed": 0},
    }
    if extra:
        for section, values in extra.items():
            cfg[section].update(values)
    return cfg


def write(path: Path, cfg: dict, command: str, note: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# {command}\n# {note}\n"
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False))


def main() -> None:
    count = 0
    for method, numbers in TABLE2.items():
        for (teacher, student, lr, beta), (base, ea_num) in zip(PAIRS, numbers, strict=True):
            for ea in (False, True):
                cfg = cifar_config(teacher, student, lr, beta, method, ea, None)
                folder = f"{'ea_' if ea else ''}{method}"
                path = ROOT / "cifar100" / folder / f"{teacher}_{student}.yaml"
                rel = path.relative_to(ROOT.parent)
                label = ("EA-" if ea else "") + method.upper().replace("_LS", "+LS")
                value = ea_num if ea else base
                write(
                    path,
                    cfg,
                    f"eakd train {rel}",
                    f"paper (Table 2): {label} {teacher} -> {student} top-1 {value:.2f}%",
                )
                count += 1
    # Table 8: entropy temperature T' for EA-KD; Table 9 / Table 1: weight kinds
    for t_prime, value in ((2.0, 73.90), (3.0, 75.46), (4.0, 75.22)):
        cfg = cifar_config(
            "resnet32x4",
            "resnet8x4",
            0.05,
            8.0,
            "kd",
            True,
            None,
            extra={"ea": {"temperature": t_prime}},
        )
        cfg["name"] = f"cifar100_ablation_tprime{int(t_prime)}"
        path = ROOT / "cifar100" / "ablation" / f"ea_kd_tprime{int(t_prime)}.yaml"
        write(
            path,
            cfg,
            f"eakd train {path.relative_to(ROOT.parent)}",
            f"paper (Table 8): EA-KD resnet32x4 -> resnet8x4 with T'={t_prime:g}: {value:.2f}%",
        )
        count += 1
    kinds = {
        "base": 75.14,
        "interact": 74.76,
        "ea": 75.46,
        "student": 74.76,
        "inverse_teacher": 72.73,
        "inverse_student": 68.90,
    }
    for kind, value in kinds.items():
        cfg = cifar_config(
            "resnet32x4", "resnet8x4", 0.05, 8.0, "kd", True, None, extra={"ea": {"kind": kind}}
        )
        cfg["name"] = f"cifar100_ablation_kind_{kind}"
        path = ROOT / "cifar100" / "ablation" / f"ea_kd_kind_{kind}.yaml"
        source = (
            "Table 1" if kind in ("student", "inverse_teacher", "inverse_student") else "Table 9"
        )
        write(
            path,
            cfg,
            f"eakd train {path.relative_to(ROOT.parent)}",
            f"paper ({source}): KD reweighted by w_{kind} resnet32x4 -> resnet8x4: {value:.2f}%",
        )
        count += 1
    # Tiny-ImageNet (Table 3): ResNet32x4 -> ResNet8x4, 200 classes
    for method, (base, ea_num) in {
        "kd": (56.00, 59.39),
        "mld": (61.91, 62.65),
        "mld_ls": (61.36, 62.41),
    }.items():
        for ea in (False, True):
            cfg = cifar_config("resnet32x4", "resnet8x4", 0.05, 8.0, method, ea, None)
            cfg["name"] = f"tiny_imagenet_{'ea_' if ea else ''}{method}_resnet32x4_resnet8x4"
            cfg["data"].update(name="tiny_imagenet", root="data/tiny-imagenet-200")
            cfg["teacher"]["checkpoint"] = "download_ckpts/tiny_imagenet_teachers/resnet32x4.pth"
            path = (
                ROOT
                / "tiny_imagenet"
                / f"{'ea_' if ea else ''}{method}"
                / "resnet32x4_resnet8x4.yaml"
            )
            label = ("EA-" if ea else "") + method.upper().replace("_LS", "+LS")
            write(
                path,
                cfg,
                f"eakd train {path.relative_to(ROOT.parent)}",
                f"paper (Table 3): {label} top-1 {ea_num if ea else base:.2f}%",
            )
            count += 1
    # ImageNet (Table 4): ResNet34 -> ResNet18 with torchvision teacher weights
    imagenet = {
        "kd": (
            {"name": "kd", "ce_weight": 1.0, "kd_weight": 0.5, "loss": {"temperature": 1.0}},
            100,
            71.03,
            71.79,
        ),
        "dkd": (
            {
                "name": "dkd",
                "ce_weight": 1.0,
                "kd_weight": 1.0,
                "warmup_epochs": 1,
                "loss": {"alpha": 1.0, "beta": 0.5, "temperature": 1.0},
            },
            100,
            71.70,
            71.96,
        ),
        "dkd_ls": (
            {
                "name": "dkd",
                "ce_weight": 1.0,
                "kd_weight": 1.0,
                "warmup_epochs": 1,
                "loss": {"alpha": 2.0, "beta": 1.0, "temperature": 1.0, "standardize": True},
            },
            130,
            71.88,
            71.99,
        ),
    }
    for method, (m, epochs, base, ea_num) in imagenet.items():
        for ea in (False, True):
            cfg = {
                "name": f"imagenet_{'ea_' if ea else ''}{method}_resnet34_resnet18",
                "output_dir": "runs",
                "teacher": {
                    "name": "imagenet_resnet34",
                    "checkpoint": "download_ckpts/resnet34-333f7ec4.pth",
                },
                "student": {"name": "imagenet_resnet18"},
                "data": {
                    "name": "imagenet",
                    "root": "data/imagenet",
                    "batch_size": 512,
                    "test_batch_size": 256,
                    "num_workers": 16,
                },
                # the quoted KD baseline (71.03, mdistiller) used CE 0.5; the EA run CE 1.0
                "method": {**m, "ce_weight": 0.5} if method == "kd" and not ea else m,
                "ea": {"enabled": ea, "temperature": 2.0, "preset": "paper"},
                "optim": {
                    "lr": 0.2,
                    "momentum": 0.9,
                    "weight_decay": 1e-4,
                    "schedule": "multistep",
                    "milestones": [30, 60, 90],
                    "gamma": 0.1,
                },
                "train": {"epochs": epochs, "seed": 0, "precision": "fp32"},
            }
            path = ROOT / "imagenet" / f"{'ea_' if ea else ''}{method}" / "resnet34_resnet18.yaml"
            label = ("EA-" if ea else "") + method.upper().replace("_LS", "+LS")
            write(
                path,
                cfg,
                f"torchrun --nproc_per_node 8 -m eakd.cli train {path.relative_to(ROOT.parent)}",
                f"paper (Table 4): {label} ResNet34 -> ResNet18 "
                f"top-1 {ea_num if ea else base:.2f}%",
            )
            count += 1
    print(f"wrote {count} configs under {ROOT}")


if __name__ == "__main__":
    main()
