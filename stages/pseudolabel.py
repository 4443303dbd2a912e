"""DVC stage `pseudolabel`: the teacher labels the unlabeled pool once; its maps are cached as
uint8 shards in data/pseudo/, bound to the teacher checkpoint's sha256 (a stale cache is
refused at load). A killed run resumes without recomputing finished shards."""

from __future__ import annotations

import time
from pathlib import Path

from semipkd.config import Params
from semipkd.data import PreparedImages
from semipkd.io import atomic_write_json, sha256_file
from semipkd.models import load_model
from semipkd.pseudolabel import write_pseudo_labels
from semipkd.runtime import select_device
from semipkd.stage import require_file, stage_main


def run(params: Params, _item: str | None) -> None:
    """Label the unlabeled pool with the teacher."""
    device = select_device(params.device)
    teacher_path = require_file("models/teacher.pt", "run the train_teacher stage first")
    teacher = load_model(teacher_path).to(device).eval()
    images = PreparedImages(require_file("data/prepared/unlabeled/all", "run the prepare stage first"))
    start = time.perf_counter()
    summary = write_pseudo_labels(
        teacher,
        images,
        Path("data/pseudo"),
        teacher_sha256=sha256_file(teacher_path),
        store_size=params.pseudolabel.store_size,
        batch_size=params.pseudolabel.batch_size,
        shard_size=params.pseudolabel.shard_size,
        device=device,
    )
    summary = dict(summary)
    summary["seconds"] = time.perf_counter() - start
    atomic_write_json(Path("reports/pseudolabel/metrics.json"), summary)


if __name__ == "__main__":
    stage_main("pseudolabel", run)
