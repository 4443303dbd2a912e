"""DVC stage `report`: the paper's tables (reports/tables.{md,csv,tex}) with our rows beside the
published reference numbers, and the figures in reports/figures/ (learning curves, the
student-vs-ablation gap per benchmark), plus the seeded study of ``reports/real/claim.json``
(``benchmarks/claim.py``) as a tables.md section and ``reports/figures/claim.png``.

Parameters and MACs are counted here; CPU latency is read from ``reports/benchmarks/latency.json``
(``python benchmarks/latency.py``), never timed in the stage, so an identical rerun writes
identical tables and ``dvc.lock`` stays unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

import _checkout  # noqa: F401,I001  (this checkout's semipkd, also in a queued experiment's copy)
from semipkd.config import Params
from semipkd.models import count_macs, count_params, load_model
from semipkd.report import (
    CLAIM_FILE,
    LATENCY_FILE,
    append_claim_section,
    append_real_section,
    labelled_key,
    latency_of,
    load_claim,
    load_evaluations,
    load_latencies,
    plot_ablation_gap,
    plot_claim,
    plot_learning_curves,
    write_tables,
)
from semipkd.stage import require_file, stage_main

log = logging.getLogger("report")

MODELS = {"teacher": "models/teacher.pt", "student": "models/student.pt", "student_no_pseudo": "models/student_no_pseudo.pt"}
#: Results of the real-data experiments (docs/real_osie.md, docs/real_eyecrowd.md), each file
#: rendered as its own section when present; CLAIM_FILE among them has its own schema and section.
REAL_RESULTS = Path("reports/real")
RUNS = {
    "teacher": "reports/train_teacher",
    "student": "reports/distill",
    "student_no_pseudo": "reports/distill_no_pseudo",
}


def append_real_results(tables_md: Path, claim_png: Path, real: Path = REAL_RESULTS) -> None:
    """Append a section per real-data results file in ``real`` to ``tables_md``, then the seeded
    study's section when ``claim.json`` is there; draw ``claim_png`` either way (a declared
    output: without a study it says where to read how to run one)."""
    for path in sorted(real.glob("*.json")):
        if path.name == CLAIM_FILE.name:
            continue  # the seeded study: its own schema, rendered below
        append_real_section(tables_md, path)
        log.info("appended the real-data section from %s to %s", path, tables_md)
    claim_path = real / CLAIM_FILE.name
    claim = load_claim(claim_path) if claim_path.is_file() else None
    if claim is not None:
        append_claim_section(tables_md, claim)
        log.info("appended the seeded study from %s to %s", claim_path, tables_md)
    plot_claim(claim, claim_png)


def run(params: Params, _item: str | None) -> None:
    """Render tables and figures from the evaluation results."""
    paths = [require_file(f"reports/evaluate/{b}.json", "run the evaluate stages first") for b in params.data.benchmarks]
    evaluations = load_evaluations(paths)
    name = params.data.labelled
    labelled = load_evaluations([require_file(f"reports/evaluate/labelled/{name}.json", "run evaluate_labelled first")])
    evaluations[labelled_key(name)] = labelled[name]
    size = [int(s) for s in params.report.latency_input_size]
    latencies = load_latencies(LATENCY_FILE)
    profiles = {}
    for name, path in MODELS.items():
        model = load_model(require_file(path, "run the training stages first"))
        backbone, width = model.config["backbone"], float(model.config.get("width", 1.0))
        prof = {
            "params": count_params(model),
            "macs": count_macs(model, size),
            "cpu_latency_ms": latency_of(latencies, backbone, width, size),
        }
        profiles[name] = prof
        if prof["cpu_latency_ms"] is None:
            log.warning(
                "%s: no CPU latency for %s (width %g) at %s in %s; run `python benchmarks/latency.py`",
                name, backbone, width, "x".join(map(str, size)), LATENCY_FILE,
            )
        log.info("%s: %s, %.2f M params, %.2f GMACs at %s", name, backbone, prof["params"] / 1e6, prof["macs"] / 1e9,
                 "x".join(map(str, size)))
    if params.data.source == "synthetic":
        note = ("Data: the generated embedded default (`data.source: synthetic`), in the real formats; "
                "our numbers show the pipeline works, they are not comparable with the published rows, "
                "which are on the real datasets.")
    else:
        note = "Data: the real datasets (`data.source: real`)."
    for path in write_tables(Path("reports"), evaluations, profiles, data_note=note):
        log.info("wrote %s", path)
    figures = Path("reports/figures")
    append_real_results(Path("reports/tables.md"), figures / "claim.png")
    plot_learning_curves({k: v for k, v in RUNS.items() if Path(v).is_dir()}, figures / "learning_curves.png")
    plot_ablation_gap(evaluations, figures / "ablation_gap.png")
    log.info("wrote figures to %s", figures)


if __name__ == "__main__":
    stage_main("report", run)
