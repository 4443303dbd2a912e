"""DVC stage `report`: the paper's tables (reports/tables.{md,csv,tex}) with our rows beside the
published reference numbers, and the figures in reports/figures/ (learning curves, the
student-vs-ablation gap per benchmark)."""

from __future__ import annotations

import logging
from pathlib import Path

from semipkd.config import Params
from semipkd.models import load_model, profile
from semipkd.report import append_real_section, load_evaluations, plot_ablation_gap, plot_learning_curves, write_tables
from semipkd.stage import require_file, stage_main

log = logging.getLogger("report")

MODELS = {"teacher": "models/teacher.pt", "student": "models/student.pt", "student_no_pseudo": "models/student_no_pseudo.pt"}
#: Results of the real-data experiment (issue 9, docs/real_osie.md), rendered when present.
REAL_RESULTS = Path("reports/real/osie.json")
RUNS = {
    "teacher": "reports/train_teacher",
    "student": "reports/distill",
    "student_no_pseudo": "reports/distill_no_pseudo",
}


def run(params: Params, _item: str | None) -> None:
    """Render tables and figures from the evaluation results."""
    paths = [require_file(f"reports/evaluate/{b}.json", "run the evaluate stages first") for b in params.data.benchmarks]
    evaluations = load_evaluations(paths)
    profiles = {}
    for name, path in MODELS.items():
        model = load_model(require_file(path, "run the training stages first"))
        prof = profile(model, input_size=params.report.latency_input_size, repeats=params.report.latency_repeats)
        profiles[name] = prof
        log.info(
            "%s: %s, %.2f M params, %.2f GMACs, %.1f ms on the CPU at %s",
            name, model.config["backbone"], prof["params"] / 1e6, prof["macs"] / 1e9, prof["cpu_latency_ms"],
            "x".join(map(str, params.report.latency_input_size)),
        )
    for path in write_tables(Path("reports"), evaluations, profiles):
        log.info("wrote %s", path)
    if REAL_RESULTS.is_file():
        append_real_section(Path("reports/tables.md"), REAL_RESULTS)
        log.info("appended the real-data section from %s to reports/tables.md", REAL_RESULTS)
    figures = Path("reports/figures")
    plot_learning_curves({k: v for k, v in RUNS.items() if Path(v).is_dir()}, figures / "learning_curves.png")
    plot_ablation_gap(evaluations, figures / "ablation_gap.png")
    log.info("wrote figures to %s", figures)


if __name__ == "__main__":
    stage_main("report", run)
