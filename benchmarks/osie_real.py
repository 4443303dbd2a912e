"""Score the models of a real-data experiment (docs/real_osie.md) on OSIE val and
collect the rows into reports/real/osie.json.

    # in the experiment's workspace (after `dvc exp run ...`, see docs/real_osie.md):
    python benchmarks/osie_real.py score --workspace DIR --model KEY=models/x.pt [...] \
        --label KEY="text" --wall-s KEY=SECONDS --out rows.json
    # or take the evaluate stage's scores of a finished `dvc exp run`:
    python benchmarks/osie_real.py from-evaluate --workspace DIR --label KEY="text" [...] --out rows.json
    # then, in the checkout:
    python benchmarks/osie_real.py collect rows1.json rows2.json ... --out reports/real/osie.json

``score`` reads the workspace's params.yaml (data roots, benchmark size, seed), opens OSIE val
(the paper's 200) with the same reader the pipeline uses, and scores each model plus the
center-bias baseline with all eight metrics under both protocols
(:func:`semipkd.evaluate.evaluate_benchmark`, the evaluate stage's code). ``collect`` merges the
row files, adds the paper code's published figures, and writes the results file that the
report stage renders into reports/tables.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semipkd.config import load_params  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.io import atomic_write_json  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)

log = logging.getLogger("osie_real")

#: A run of the paper's own scripts (MobileNetV2 student, ImageNet-initialised, OSIE
#: train 500 / val 200, 384x384, batch 8, AdamW 1e-3 cosine over 11 epochs, EMA 0.999, no AMP,
#: 2-core CPU), scored with the benchmark's definitions on the 200 val images at 384x384.
PUBLISHED = [
    {
        "key": "paper_code_labelled_only",
        "label": "Paper code: MobileNetV2, labelled only",
        "source": "published",
        "input_size": [384, 384],
        "epochs": 11,
        "wall_s": 36 * 60.0,
        "metrics": {"model_resolution": {"cc": 0.7986, "kld": 0.4390, "nss": 2.923, "sim": 0.6614, "auc_judd": 0.9157}},
        "note": "the paper's own scripts, run on a 2-core CPU of this kind (about 36 minutes)",
    },
    {
        "key": "paper_code_center_bias",
        "label": "Paper code's center-bias Gaussian",
        "source": "published",
        "input_size": [384, 384],
        "epochs": None,
        "wall_s": None,
        "metrics": {"model_resolution": {"cc": 0.3040, "kld": 1.354, "nss": 0.859, "sim": 0.362, "auc_judd": 0.740}},
        "note": "the paper's own scripts, same run",
    },
]


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"--{what} {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def _row(key: str, label: str, size, wall_s: float | None, metrics: dict, **extra) -> dict:
    """One measured row of the results file (see :func:`semipkd.report.load_real_results`)."""
    return {"key": key, "label": label, "source": "measured", "input_size": list(size), "epochs": None,
            "wall_s": wall_s, "metrics": metrics, **extra}


def score(args: argparse.Namespace) -> None:
    import os

    from semipkd.data import open_benchmark
    from semipkd.evaluate import CENTER_BIAS, evaluate_benchmark
    from semipkd.models import load_model
    from semipkd.runtime import select_device

    ws = Path(args.workspace).resolve()
    os.chdir(ws)  # data roots in params.yaml are relative to the workspace
    params = load_params("params.yaml")
    models = _pairs(args.model, "model")
    labels = _pairs(args.label, "label")
    walls = {k: float(v) for k, v in _pairs(args.wall_s, "wall-s").items()}
    size = params.prepare.benchmark_size
    samples = open_benchmark("osie", params.data.folder("osie"), "val", on_error=params.data.on_error)
    log.info("OSIE val: %d images from %s, scored at %s", len(samples), params.data.folder("osie"), size)
    predictors = {k: load_model(ws / v) for k, v in models.items()}
    if args.center_bias:
        predictors["center_bias"] = CENTER_BIAS
    result = evaluate_benchmark(
        predictors, samples, input_size=size, output_size=size, device=select_device(params.device),
        seed=params.seed, batch_size=params.evaluate.batch_size, center_bias_sigma=params.evaluate.center_bias_sigma,
        num_examples=0,
    )
    rows = [
        _row(key if key != "center_bias" else f"center_bias_{size[0]}",
             labels.get(key, "Center-bias Gaussian (ours)" if key == "center_bias" else key),
             size, walls.get(key), per, n_images=len(samples))
        for key, per in result.scores.items()
    ]
    for r in rows:
        log.info("%s: %s", r["key"], {p: {m: round(v, 4) for m, v in d.items()} for p, d in r["metrics"].items()})
    atomic_write_json(Path(args.out).resolve() if Path(args.out).is_absolute() else REPO / args.out, {"rows": rows})


def from_evaluate(args: argparse.Namespace) -> None:
    """Rows from a workspace's ``reports/evaluate/osie.json`` (the evaluate stage's own scores)."""
    ws = Path(args.workspace).resolve()
    params = load_params(ws / "params.yaml")
    scores = json.loads((ws / "reports/evaluate/osie.json").read_text())
    labels = _pairs(args.label, "label")
    walls = {k: float(v) for k, v in _pairs(args.wall_s, "wall-s").items()}
    size = params.prepare.benchmark_size
    rows = [_row(f"{k}_{size[0]}", labels[k], size, walls.get(k), per) for k, per in scores.items() if k in labels]
    atomic_write_json(Path(args.out).resolve(), {"rows": rows})
    log.info("wrote %d rows from %s", len(rows), ws / "reports/evaluate/osie.json")


def collect(args: argparse.Namespace) -> None:
    from semipkd.report import load_real_results

    meta = json.loads(Path(args.meta).read_text())
    rows = []
    for f in args.rows:
        rows += json.loads(Path(f).read_text())["rows"]
    by_key = {r["key"]: r for r in rows}
    for key, extra in meta.get("rows", {}).items():
        if key not in by_key:
            raise SystemExit(f"{args.meta}: row {key!r} is not in any rows file")
        by_key[key].update(extra)
    ordered = [by_key[k] for k in meta.get("order", list(by_key))] + PUBLISHED
    out = {"heading": meta["heading"], "description": meta.get("description", []), "rows": ordered,
           "notes": meta.get("notes", [])}
    atomic_write_json(Path(args.out), out)
    load_real_results(args.out)  # the shape the report stage expects
    log.info("wrote %s (%d rows)", args.out, len(ordered))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="score models of an experiment workspace on OSIE val")
    s.add_argument("--workspace", required=True)
    s.add_argument("--model", action="append", required=True, help="KEY=path/to/model.pt (relative to the workspace)")
    s.add_argument("--label", action="append", help="KEY=label for the table")
    s.add_argument("--wall-s", action="append", help="KEY=seconds the model took to train")
    s.add_argument("--center-bias", action="store_true", help="also score the center-bias baseline")
    s.add_argument("--out", required=True)
    e = sub.add_parser("from-evaluate", help="rows from a workspace's reports/evaluate/osie.json")
    e.add_argument("--workspace", required=True)
    e.add_argument("--label", action="append", required=True, help="KEY=label; only these models become rows")
    e.add_argument("--wall-s", action="append", help="KEY=seconds the model took to train")
    e.add_argument("--out", required=True)
    c = sub.add_parser("collect", help="merge row files into reports/real/osie.json")
    c.add_argument("rows", nargs="+")
    c.add_argument("--meta", required=True, help="JSON with heading, description, notes, order and per-row extras")
    c.add_argument("--out", default=str(REPO / "reports/real/osie.json"))
    args = p.parse_args(argv)
    {"score": score, "from-evaluate": from_evaluate, "collect": collect}[args.cmd](args)


if __name__ == "__main__":
    main()
