"""Diagnostics, figures and ablations of EA-KD (Section 4.3 and Appendix B of the paper).

From the command line::

    eakd analyze runs/demo            # every figure + report.md for the runs below runs/demo
    eakd analyze runs/ea_kd --checkpoint 120   # the forward passes on the epoch-120 snapshot
    eakd ablate configs/...yaml       # Tables 1, 8 and 9 as sweeps

From Python::

    from eakd.analysis import analyze, write_demo_figures
    report = analyze(["runs/kd", "runs/ea_kd"], out_dir="figures", figures=["loss_share"])

The figures need the ``[analysis]`` extra (matplotlib, scikit-learn); both are imported only
when a figure is drawn, so the numbers (:mod:`eakd.analysis.metrics`) and the loss landscape
(:mod:`eakd.analysis.landscape`) work without them.
"""

from .ablation import (
    ABLATION_KINDS,
    ABLATION_TEMPERATURES,
    AblationResult,
    format_table1,
    format_table8,
    format_table9,
    run_ablation,
)
from .analyze import (
    EPOCH_FIGURES,
    FIGURES,
    AnalysisOptions,
    AnalysisReport,
    FigureResult,
    analyze,
    checkpoint_name,
    write_demo_figures,
)
from .landscape import filter_normalized_direction, loss_surface, mean_loss
from .metrics import (
    accuracy_by_segment,
    area_below,
    calinski_harabasz,
    entropy_segments,
    quantile_loss_shares,
    quantile_loss_shares_exact,
    quantile_share_uncertainty,
    top_fraction,
)
from .runs import Group, Run, find_runs, group_runs

__all__ = [
    "ABLATION_KINDS",
    "ABLATION_TEMPERATURES",
    "EPOCH_FIGURES",
    "FIGURES",
    "AblationResult",
    "AnalysisOptions",
    "AnalysisReport",
    "FigureResult",
    "Group",
    "Run",
    "accuracy_by_segment",
    "analyze",
    "area_below",
    "calinski_harabasz",
    "checkpoint_name",
    "entropy_segments",
    "filter_normalized_direction",
    "find_runs",
    "format_table1",
    "format_table8",
    "format_table9",
    "group_runs",
    "loss_surface",
    "mean_loss",
    "quantile_loss_shares",
    "quantile_loss_shares_exact",
    "quantile_share_uncertainty",
    "run_ablation",
    "top_fraction",
    "write_demo_figures",
]
