"""DVC stage `pseudolabel`: the teacher labels the unlabeled pool once; its maps are cached as
uint8 shards in data/pseudo/, bound to the teacher checkpoint's sha256 (a stale cache is
refused at load). A killed run resumes without recomputing finished shards.

The DVC metrics file holds only what the cache *is* (count, shards, size, bytes, teacher hash), so
an identical rerun leaves ``dvc.lock`` unchanged; how this run went (seconds, images/s, shards
reused) goes to ``reports/pseudolabel/last_run.json``, which neither DVC nor git tracks."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import _checkout  # noqa: F401,I001  (this checkout's semipkd, also in a queued experiment's copy)
from semipkd.config import Params
from semipkd.data import PreparedImages, prepared_root
from semipkd.io import atomic_write_json, sha256_file
from semipkd.models import load_model
from semipkd.pseudolabel import write_pseudo_labels
from semipkd.runtime import select_device
from semipkd.stage import require_file, stage_main

log = logging.getLogger("pseudolabel")
#: Summary keys that describe this run rather than the cache: kept out of the DVC metrics file.
RUN_KEYS = ("shards_reused", "shards_written", "images_per_s", "seconds")


def run(params: Params, _item: str | None) -> None:
    """Label the unlabeled pool with the teacher."""
    device = select_device(params.device)
    teacher_path = require_file("models/teacher.pt", "run the train_teacher stage first")
    teacher = load_model(teacher_path).to(device).eval()
    # The teacher labels the pool at its own input size; the maps are for the students' output size.
    images = PreparedImages(require_file(prepared_root(params.prepare, teacher=True) / "unlabeled" / "all",
                                         "run the prepare stage first"))
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
        blur=params.pseudolabel.blur,
        target_size=params.prepare.output_size,
    )
    run_log = {k: summary[k] for k in RUN_KEYS if k in summary}
    run_log["seconds"] = time.perf_counter() - start
    atomic_write_json(Path("reports/pseudolabel/metrics.json"), {k: v for k, v in summary.items() if k not in RUN_KEYS})
    atomic_write_json(Path("reports/pseudolabel/last_run.json"), run_log)
    log.info(
        "%d images in %d shards (%d reused) in %.1f s, %.1f images/s",
        summary["count"], summary["shards"], summary["shards_reused"], run_log["seconds"], summary["images_per_s"],
    )


if __name__ == "__main__":
    stage_main("pseudolabel", run)
