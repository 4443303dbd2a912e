"""DVC stage `finetune@<benchmark>`: the distilled student and the labelled-only student are
each fine-tuned on the benchmark's train split at the benchmark resolution (384x384 in the
paper) -> models/finetune/<benchmark>/{student,student_no_pseudo}.pt."""

from __future__ import annotations

from pathlib import Path

from semipkd.config import Params
from semipkd.models import load_model
from semipkd.names import ALL_BENCHMARKS
from semipkd.runtime import select_device
from semipkd.stage import StageError, require_file, stage_main
from semipkd.training import train_labelled

STUDENTS = ("student", "student_no_pseudo")


def run(params: Params, item: str | None) -> None:
    """Fine-tune both students on one benchmark."""
    if item not in ALL_BENCHMARKS:
        raise StageError(f"finetune needs a benchmark id, one of {', '.join(ALL_BENCHMARKS)}; got {item!r}")
    device = select_device(params.device)
    for which in STUDENTS:
        model = load_model(require_file(f"models/{which}.pt", "run the distill stages first"))
        model.output_size = params.prepare.benchmark_size
        train_labelled(
            model,
            Path("data/prepared") / item,
            params.finetune,
            seed=params.seed,
            device=device,
            out_path=Path("models/finetune") / item / f"{which}.pt",
            ckpt_dir=Path("models/ckpt/finetune") / item / which,
            live_dir=Path("reports/finetune") / item / which,
            photometric=True,
        )


if __name__ == "__main__":
    stage_main("finetune", run)
