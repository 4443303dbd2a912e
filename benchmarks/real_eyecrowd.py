"""Collect the cross-dataset run on real data (params/osie_eyecrowd.yaml) into reports/real/.

Run in the workspace of each experiment, right after it (docs/real_eyecrowd.md):

    dvc exp run -n eyecrowd-finetuned
    python benchmarks/real_eyecrowd.py --arm finetuned --wall-s SECONDS
    dvc exp run -n eyecrowd-zero-shot -S finetune.epochs=0
    python benchmarks/real_eyecrowd.py --arm zero_shot --wall-s SECONDS

It reads the evaluate stages' outputs (``reports/evaluate/eyecrowd.json``, and for the
fine-tuned arm ``reports/evaluate/labelled/osie.json``) and merges rows into
``reports/real/eyecrowd.json`` (EyeCrowd val: teacher, both students fine-tuned and zero-shot,
centre bias) and ``reports/real/eyecrowd_osie_val.json`` (OSIE val, the labelled set: teacher and
both students before fine-tuning, centre bias), in the format ``semipkd.report.load_real_results``
reads; the ``report`` stage renders every ``reports/real/*.json`` into ``reports/tables.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semipkd.config import load_params  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.io import atomic_write_json  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.report import load_real_results  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)

LABELS = {
    "teacher": "Teacher, tf_efficientnet_lite2 (OSIE train)",
    "student": "Semi-PKD student, mobilenet_v2",
    "student_no_pseudo": "Labelled-only student (ablation), mobilenet_v2",
    "center_bias": "Centre bias",
}


def _merge(path: Path, heading: str, description: list[str], rows: list[dict]) -> None:
    old = load_real_results(path)["rows"] if path.is_file() else []
    keys = {r["key"] for r in rows}
    merged = [r for r in old if r["key"] not in keys] + rows
    order = ["teacher", "student_finetuned", "student_no_pseudo_finetuned", "student_zero_shot",
             "student_no_pseudo_zero_shot", "student", "student_no_pseudo", "center_bias"]
    merged.sort(key=lambda r: order.index(r["key"]) if r["key"] in order else len(order))
    atomic_write_json(path, {"heading": heading, "description": description, "rows": merged, "notes": []})
    print(f"{path}: {len(merged)} rows")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arm", choices=("finetuned", "zero_shot"), required=True)
    ap.add_argument("--wall-s", type=float, default=None, help="wall time of this experiment's dvc exp run")
    ap.add_argument("--out", default=str(ROOT / "reports/real"))
    args = ap.parse_args(argv)
    params = load_params("params.yaml")
    size = list(params.prepare.benchmark_size)
    epochs = params.finetune.epochs
    if (args.arm == "zero_shot") != (epochs == 0):
        raise SystemExit(f"--arm {args.arm} but finetune.epochs is {epochs} in params.yaml")
    scores = json.loads(Path("reports/evaluate/eyecrowd.json").read_text())
    out = Path(args.out)
    rows = []
    for key in ("teacher", "student", "student_no_pseudo", "center_bias"):
        if args.arm == "zero_shot" and key in ("teacher", "center_bias"):
            continue  # the same models as in the fine-tuned arm
        is_student = key.startswith("student")
        suffix = {"finetuned": f", fine-tuned on EyeCrowd train ({epochs} epochs)", "zero_shot": ", zero-shot (OSIE only)"}
        rows.append({
            "key": f"{key}_{args.arm}" if is_student else key,
            "label": LABELS[key] + (suffix[args.arm] if is_student else ""),
            "source": "measured",
            "input_size": None if key == "center_bias" else size,
            "epochs": epochs if is_student else None,
            "wall_s": args.wall_s if is_student else None,
            "metrics": scores[key],
            "note": f"dvc exp run ({args.arm})",
        })
    budget = (f"{size[0]}x{size[1]}, teacher {params.train_teacher.epochs} + students {params.distill.epochs} epochs "
              f"on OSIE train, batch {params.distill.batch_size}, 2-core CPU")
    _merge(out / "eyecrowd.json",
           "EyeCrowd val (100), real data: OSIE-trained, pseudo-labels on 500 scene photos, "
           f"fine-tuned on EyeCrowd train (400) — {budget}",
           ["The paper's cross-dataset protocol on real data (params/osie_eyecrowd.yaml, docs/real_eyecrowd.md): "
            "zero-shot rows are the OSIE-trained students as they are; fine-tuned rows after fine-tuning on "
            "EyeCrowd train with the epoch chosen on a 15% holdout of it. Wall time: the whole dvc exp run of that arm."],
           rows)
    if args.arm == "finetuned":
        lab = json.loads(Path("reports/evaluate/labelled/osie.json").read_text())
        _merge(out / "eyecrowd_osie_val.json",
               f"OSIE val (200), the labelled set of the EyeCrowd run: students before fine-tuning — {budget}",
               ["The same run's teacher and students on the labelled set's own val split (evaluate_labelled)."],
               [{"key": k, "label": LABELS[k], "source": "measured", "input_size": None if k == "center_bias" else size,
                 "epochs": None, "wall_s": None, "metrics": lab[k], "note": "evaluate_labelled"} for k in LABELS])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
