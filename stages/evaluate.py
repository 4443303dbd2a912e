"""DVC stage `evaluate@<benchmark>`: the teacher, the fine-tuned student, the fine-tuned
labelled-only student and a center-bias baseline scored on the benchmark's val split with all
eight metrics under both protocols -> reports/evaluate/<benchmark>.json (model / protocol /
metric) and a grid of examples reports/evaluate/<benchmark>.png."""

from __future__ import annotations

import logging
from pathlib import Path

from semipkd.config import Params
from semipkd.data import open_benchmark
from semipkd.evaluate import evaluate_benchmark, write_per_image_csv
from semipkd.io import atomic_write_json
from semipkd.models import load_model
from semipkd.names import BENCHMARKS, CENTER_BIAS, MODELS
from semipkd.report import plot_examples_grid
from semipkd.runtime import select_device
from semipkd.stage import StageError, require_file, stage_main

log = logging.getLogger("evaluate")


def run(params: Params, item: str | None) -> None:
    """Score every model on one benchmark's val split."""
    if item not in BENCHMARKS:
        raise StageError(f"evaluate needs a benchmark id, one of {', '.join(BENCHMARKS)}; got {item!r}")
    device = select_device(params.device)
    samples = open_benchmark(item, params.data.folder(item), "val", on_error=params.data.on_error)
    if params.data.on_error == "skip":
        # As in prepare: a file that does not decode is left out, counted and named in the log.
        samples.validate(progress=False)
        if samples.skipped:
            log.warning("%s/val: %d files skipped (data.on_error: skip): %s", item, len(samples.skipped),
                        "; ".join(f"{f}: {r}" for f, r in samples.skipped))
    hint = "run the training stages first (dvc repro)"
    predictors = {
        "teacher": load_model(require_file("models/teacher.pt", hint)),
        "student": load_model(require_file(f"models/finetune/{item}/student.pt", hint)),
        "student_no_pseudo": load_model(require_file(f"models/finetune/{item}/student_no_pseudo.pt", hint)),
        "center_bias": CENTER_BIAS,
    }
    size = params.prepare.benchmark_size
    result = evaluate_benchmark(
        predictors,
        samples,
        input_size=size,
        output_size=size,
        device=device,
        seed=params.seed,
        protocols=params.evaluate.protocols,
        batch_size=params.evaluate.batch_size,
        center_bias_sigma=params.evaluate.center_bias_sigma,
        num_examples=params.evaluate.num_figures,
    )
    out = Path("reports/evaluate")
    atomic_write_json(out / f"{item}.json", result.scores)
    write_per_image_csv(out / "per_image" / f"{item}.csv", result)
    plot_examples_grid(
        result.examples,
        out / f"{item}.png",
        models=MODELS,
        title=f"{item} val: image, ground truth, teacher, student, labelled-only student",
    )


if __name__ == "__main__":
    stage_main("evaluate", run)
