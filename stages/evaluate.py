"""DVC stages `evaluate@<benchmark>` and `evaluate_labelled`.

`evaluate@<benchmark>`: the teacher, the fine-tuned student, the fine-tuned labelled-only student
and a center-bias baseline scored on the benchmark's val split with all eight metrics under both
protocols -> reports/evaluate/<benchmark>.json (model / protocol / metric) and a grid of examples
reports/evaluate/<benchmark>.png.

`evaluate_labelled` (item `labelled`): the same for the labelled set's own val split (SALICON in
the paper's configuration, the headline table), with the teacher and the two students *before*
fine-tuning, at the labelled set's sizes (prepare.input_size in, prepare.output_size out) ->
reports/evaluate/labelled/<labelled set>.json and .png."""

from __future__ import annotations

import logging
from pathlib import Path

import _checkout  # noqa: F401,I001  (this checkout's semipkd, also in a queued experiment's copy)
from semipkd.config import Params
from semipkd.data import open_benchmark
from semipkd.evaluate import evaluate_benchmark, write_per_image_csv
from semipkd.io import atomic_write_json
from semipkd.models import load_model
from semipkd.names import ALL_BENCHMARKS, CENTER_BIAS, MODELS, STUDENTS, TEACHER
from semipkd.report import plot_examples_grid
from semipkd.runtime import select_device
from semipkd.stage import StageError, require_file, stage_main

log = logging.getLogger("evaluate")
#: The item of the `evaluate_labelled` stage.
LABELLED = "labelled"


def run(params: Params, item: str | None) -> None:
    """Score every model on one benchmark's val split (item `labelled`: the labelled set's)."""
    if item not in ALL_BENCHMARKS and item != LABELLED:
        raise StageError(f"evaluate needs a benchmark id, one of {', '.join(ALL_BENCHMARKS)}, or {LABELLED!r}; got {item!r}")
    hint = "run the training stages first (dvc repro)"
    if item == LABELLED:
        name = params.data.labelled
        students = {k: f"models/{k}.pt" for k in STUDENTS}
        input_size, output_size = params.prepare.input_size, params.prepare.output_size
        out = Path("reports/evaluate/labelled")
        what = f"{name} val (the labelled set; students before fine-tuning)"
    else:
        name = item
        students = {k: f"models/finetune/{item}/{k}.pt" for k in STUDENTS}
        input_size = output_size = params.prepare.benchmark_size
        out = Path("reports/evaluate")
        what = f"{name} val"
    # The models first: a file that cannot be loaded stops the stage before any data is read.
    predictors = {
        TEACHER: load_model(require_file("models/teacher.pt", hint)),
        **{k: load_model(require_file(path, hint)) for k, path in students.items()},
        CENTER_BIAS: CENTER_BIAS,
    }
    device = select_device(params.device)
    samples = open_benchmark(name, params.data.folder(name), "val", on_error=params.data.on_error)
    if params.data.on_error == "skip":
        # As in prepare: a file that does not decode is left out, counted and named in the log.
        samples.validate(progress=False)
        if samples.skipped:
            log.warning("%s/val: %d files skipped (data.on_error: skip): %s", name, len(samples.skipped),
                        "; ".join(f"{f}: {r}" for f, r in samples.skipped))
    result = evaluate_benchmark(
        predictors,
        samples,
        input_size=input_size,
        output_size=output_size,
        device=device,
        seed=params.seed,
        protocols=params.evaluate.protocols,
        batch_size=params.evaluate.batch_size,
        center_bias_sigma=params.evaluate.center_bias_sigma,
        num_examples=params.evaluate.num_figures,
        # A teacher at its own resolution sees the labelled set's images at its input size.
        input_sizes={TEACHER: params.prepare.teacher_sizes()[0]}
        if params.prepare.teacher_has_own_size and name == params.data.labelled else None,
    )
    atomic_write_json(out / f"{name}.json", result.scores)
    write_per_image_csv(out / "per_image" / f"{name}.csv", result)
    plot_examples_grid(
        result.examples,
        out / f"{name}.png",
        models=MODELS,
        title=f"{what}: image, ground truth, teacher, student, labelled-only student",
    )
    log.info("wrote %s", out / f"{name}.json")


if __name__ == "__main__":
    stage_main("evaluate", run)
