"""DVC stage `prepare`: generate the default data (or find the real data), validate every
sample, and write the prepared caches the training stages read.

Outputs: ``data.synthetic_root`` (default data/synthetic/: the generated datasets; a note when
data.source is real),
data/prepared/<name>/<split>/ (memory-mappable caches), reports/prepare/manifest.csv (one row
per sample) and reports/prepare/summary.json (counts).
"""

from __future__ import annotations

import collections
import csv
import io
import logging
import shutil
from pathlib import Path

import _checkout  # noqa: F401,I001  (this checkout's semipkd, also in a queued experiment's copy)
from semipkd.config import Params
from semipkd.data import PREPARED, open_labelled_train, prepare_benchmark, prepare_unlabeled
from semipkd.data.synthetic import generate
from semipkd.io import atomic_write_json, atomic_write_text
from semipkd.stage import stage_main

log = logging.getLogger("prepare")

REPORTS = Path("reports/prepare")


def run(params: Params, _item: str | None) -> None:
    """Generate or locate the datasets, validate them, write the prepared caches."""
    data = params.data
    names = list(dict.fromkeys([data.labelled, *data.benchmarks]))
    synthetic = Path(data.synthetic_root)  # dvc.yaml declares the same path: ${data.synthetic_root}
    if data.source == "synthetic":
        syn = params.synthetic
        log.info("generating the embedded default dataset into %s", synthetic)
        summary = generate(
            synthetic,
            seed=syn.seed,
            salicon=(syn.salicon_train, syn.salicon_val),
            benchmark=syn.benchmark_images,
            unlabeled=syn.unlabeled,
            image_size=syn.image_size,
            observers=syn.observers,
        )
        log.info("generated: %s", summary)
    else:
        if synthetic.exists():
            shutil.rmtree(synthetic)
        synthetic.mkdir(parents=True)
        (synthetic / "README.md").write_text("data.source is 'real': nothing was generated.\n")

    rows: list[dict] = []
    subset = None if data.labelled_subset is None else (data.labelled_subset, data.subset_seed)
    # The labelled train split is opened once (for OSIE that reads fixations.mat) and shared by the
    # students' and the teacher's prepared copies and the pool.
    kept = withheld = None
    if subset is not None:
        kept, withheld = open_labelled_train(data.labelled, data.folder(data.labelled), subset=subset, on_error=data.on_error)
        if not data.withheld_to_pool:
            withheld = None
    for name in names:
        if name == data.labelled:
            in_size, out_size = params.prepare.input_size, params.prepare.output_size
        else:
            in_size = out_size = params.prepare.benchmark_size
        log.info("preparing %s from %s at %s in, %s out", name, data.folder(name), in_size, out_size)
        for row in prepare_benchmark(
            name, data.folder(name), PREPARED / name,
            input_size=in_size, output_size=out_size, on_error=data.on_error,
            num_workers=data.num_workers, train=kept if name == data.labelled else None,
        ):
            rows.append({"dataset": name, **row})
    if params.prepare.teacher_has_own_size:
        t_in, t_out = params.prepare.teacher_sizes()
        teacher_dir = PREPARED / "teacher"
        log.info("preparing %s and the pool for the teacher at %s in, %s out (%s)", data.labelled, t_in, t_out, teacher_dir)
        prepare_benchmark(
            data.labelled, data.folder(data.labelled), teacher_dir / data.labelled,
            input_size=t_in, output_size=t_out, on_error=data.on_error, num_workers=data.num_workers, train=kept,
        )
        prepare_unlabeled(
            data.folder("unlabeled"), teacher_dir / "unlabeled", input_size=t_in, on_error=data.on_error,
            num_workers=data.num_workers, extra=withheld,
        )
    elif (PREPARED / "teacher").exists():
        shutil.rmtree(PREPARED / "teacher")
    log.info("preparing the unlabeled pool from %s", data.folder("unlabeled"))
    for row in prepare_unlabeled(
        data.folder("unlabeled"), PREPARED / "unlabeled",
        input_size=params.prepare.input_size, on_error=data.on_error,
        num_workers=data.num_workers, extra=withheld,
    ):
        rows.append({"dataset": "unlabeled", "split": "all", **row})

    counts: dict = collections.defaultdict(lambda: collections.Counter())
    for row in rows:
        counts[f"{row['dataset']}/{row.get('split', 'all')}"][row["status"]] += 1
    summary = {key: dict(c) for key, c in sorted(counts.items())}
    skipped = sum(c.get("skipped", 0) for c in counts.values())
    for key, c in summary.items():
        log.info("%-22s %s", key, ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    if skipped:
        log.warning("%d samples skipped (data.on_error: skip); reasons in %s", skipped, REPORTS / "manifest.csv")

    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(REPORTS / "manifest.csv", buf.getvalue())
    atomic_write_json(REPORTS / "summary.json", {"counts": summary, "skipped": skipped, "samples": len(rows)})


if __name__ == "__main__":
    stage_main("prepare", run)
