"""DVC stage `finetune@<benchmark>`: the distilled student and the labelled-only student are
each fine-tuned on the benchmark's train split at the benchmark resolution (384x384 in the
paper) -> models/finetune/<benchmark>/{student,student_no_pseudo}.pt.

With ``finetune.pseudo_loss`` set, the Semi-PKD student also gets a pseudo-label pass per epoch
over the unlabeled pool, labelled by the trained teacher (its cached maps, checked against
``models/teacher.pt``): what the paper's code intends, whose fine-tuning never loads the teacher.
The labelled-only student never sees pseudo-labels, in fine-tuning either."""

from __future__ import annotations

from pathlib import Path

import _checkout  # noqa: F401,I001  (this checkout's semipkd, also in a queued experiment's copy)
from semipkd.config import Params
from semipkd.models import load_model
from semipkd.names import ALL_BENCHMARKS, STUDENT, STUDENTS
from semipkd.runtime import select_device
from semipkd.stage import StageError, require_file, stage_main
from semipkd.training import pseudo_pool, train_labelled


def run(params: Params, item: str | None) -> None:
    """Fine-tune both students on one benchmark."""
    if item not in ALL_BENCHMARKS:
        raise StageError(f"finetune needs a benchmark id, one of {', '.join(ALL_BENCHMARKS)}; got {item!r}")
    device = select_device(params.device)
    cfg = params.finetune
    for which in STUDENTS:
        model = load_model(require_file(f"models/{which}.pt", "run the distill stages first"))
        model.output_size = params.prepare.benchmark_size
        pseudo = None
        if which == STUDENT and cfg.pseudo_loss is not None and cfg.epochs > 0:
            pseudo = pseudo_pool(params.prepare.benchmark_size, cfg.pseudo_augment, seed=params.seed)
        train_labelled(
            model,
            Path("data/prepared") / item,
            cfg,
            seed=params.seed,
            device=device,
            out_path=Path("models/finetune") / item / f"{which}.pt",
            ckpt_dir=Path("models/ckpt/finetune") / item / which,
            live_dir=Path("reports/finetune") / item / which,
            pseudo=pseudo,
        )


if __name__ == "__main__":
    stage_main("finetune", run)
