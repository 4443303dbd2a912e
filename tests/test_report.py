"""Tests of semipkd.report: the tables hold the numbers they were given; figures are real PNGs."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import matplotlib.image as mpimg
import numpy as np
import pytest

from semipkd import report


@dataclass
class Example:
    """The fields of semipkd.evaluate.Example the grid reads."""

    name: str
    image: np.ndarray
    density: np.ndarray
    fixations: np.ndarray
    predictions: dict

METRICS = ("cc", "kld", "nss", "sim", "auc_judd", "auc_borji", "sauc", "info_gain")


def _scores(base: float) -> dict:
    # distinct, recognisable numbers per model/protocol/metric
    return {
        proto: {m: round(base + 0.01 * i + (0.1 if proto == "benchmark" else 0.0), 6) + 1e-7 for i, m in enumerate(METRICS)}
        for proto in ("benchmark", "model_resolution")
    }


EVALS = {
    "mit1003": {
        "teacher": _scores(0.70),
        "student": _scores(0.60),
        "student_no_pseudo": _scores(0.50),
        "center_bias": _scores(0.30),
    },
    # the labelled set's own val (evaluate_labelled): the published PKD rows sit beside it
    report.labelled_key("salicon"): {"teacher": _scores(0.80), "student": _scores(0.75), "student_no_pseudo": _scores(0.72),
                                     "center_bias": _scores(0.40)},
}
PROFILES = {
    "teacher": {"params": 12_345_678, "macs": 3_210_000_000, "cpu_latency_ms": 123.45},
    "student": {"params": 2_500_000, "macs": 400_000_000, "cpu_latency_ms": 21.0},
    "student_no_pseudo": {"params": 2_500_000, "macs": 400_000_000, "cpu_latency_ms": 21.0},
    "center_bias": {"params": 0, "macs": 0, "cpu_latency_ms": 0.01},
}


def test_markdown_table_holds_the_given_numbers_and_the_published_rows():
    md = report.render_markdown(EVALS, PROFILES)
    # protocol sections, benchmarks in the paper's order (SALICON first)
    assert md.index("## benchmark protocol") < md.index("## model-resolution protocol")
    sec = md[md.index("## benchmark protocol") : md.index("## model-resolution protocol")]
    assert sec.index("### SALICON") < sec.index("### MIT1003")
    mit = sec[sec.index("### MIT1003") :]
    student = next(line for line in mit.splitlines() if line.startswith("| Student (Semi-PKD)"))
    cells = [c.strip() for c in student.strip("|").split("|")]
    # Model, Source, Params (M), MACs (G), CPU (ms), CC, KLD, NSS, SIM, AUC-J, sAUC
    s = EVALS["mit1003"]["student"]["benchmark"]
    assert cells == [
        "Student (Semi-PKD)", "ours", "2.50", "0.40", "21.0",
        f"{s['cc']:.4f}", f"{s['kld']:.4f}", f"{s['nss']:.4f}", f"{s['sim']:.4f}", f"{s['auc_judd']:.4f}", f"{s['sauc']:.4f}",
    ]
    teacher = next(line for line in mit.splitlines() if line.startswith("| Teacher"))
    assert "| 12.35 | 3.21 | 123.5 |" in teacher
    # published numbers beside ours on SALICON, labelled and sourced, blanks where unpublished
    sal = sec[sec.index("### SALICON") : sec.index("### MIT1003")]
    pub = [line for line in sal.splitlines() if "*published*" in line]
    assert len(pub) == 2
    b4 = next(line for line in pub if "EfficientNet-B4" in line)
    assert [c.strip() for c in b4.strip("|").split("|")][5:] == ["0.9055", "0.1924", "1.9346", "–", "–", "–"]
    ofa = next(line for line in pub if "OFA-595" in line)
    assert "| 0.9062 | 0.1907 | 1.9298 |" in ofa
    assert "github.com/chakkritte/PKD" in md
    assert "*published*" not in sec[sec.index("### MIT1003") :]  # published numbers only where they were measured
    assert "### SALICON (the labelled set; students before fine-tuning) (val)" in sec
    # a benchmark that is not the labelled set's own val never gets them
    assert "| *published* |" not in report.render_markdown({"salicon": EVALS["mit1003"]}, PROFILES)


def test_csv_is_long_form_with_every_metric_unrounded():
    rows = list(csv.DictReader(io.StringIO(report.render_csv(EVALS, PROFILES))))
    ours = [r for r in rows if r["source"] == "ours"]
    assert len(ours) == 2 * 2 * 4  # benchmarks x protocols x models
    for r in ours:
        want = EVALS[r["benchmark"]][r["model"]][r["protocol"]]
        for m in METRICS:
            assert float(r[m]) == want[m]  # exact: nothing rounded
        assert float(r["params"]) == PROFILES[r["model"]]["params"]
        assert float(r["cpu_latency_ms"]) == PROFILES[r["model"]]["cpu_latency_ms"]
    pub = [r for r in rows if r["protocol"] == "published"]
    assert len(pub) == 2
    assert all(r["benchmark"] == "salicon:labelled" and r["source"].startswith("published:") for r in pub)
    b4 = next(r for r in pub if "EfficientNet-B4" in r["model"])
    assert (float(b4["cc"]), float(b4["kld"]), float(b4["nss"])) == (0.9055, 0.1924, 1.9346)
    assert b4["sim"] == "" and b4["params"] == ""


def test_latex_tables_escape_names_and_hold_the_numbers():
    tex = report.render_latex(EVALS, PROFILES)
    assert tex.count(r"\begin{table}") == 4 and tex.count(r"\end{tabular}") == 4
    assert r"\toprule" in tex and r"\label{tab:mit1003-model-resolution}" in tex
    s = EVALS["mit1003"]["student_no_pseudo"]["model_resolution"]
    line = next(ln for ln in tex.splitlines() if ln.startswith("Student w/o pseudo-labels") and f"{s['cc']:.4f}" in ln)
    assert line.endswith(r"\\") and line.count("&") == 9
    assert r"$^\dagger$" in tex and "--" in tex  # published marker; dash for missing values
    assert "_" not in tex.replace(r"\_", "").split("% Sources")[0].replace("tab:", "")  # no raw underscores in cells


def test_write_tables_and_load_evaluations_round_trip(tmp_path):
    for b, s in EVALS.items():
        (tmp_path / f"{b}.json").write_text(json.dumps(s))
    loaded = report.load_evaluations(sorted(tmp_path.glob("*.json")))
    assert loaded == EVALS
    out = tmp_path / "reports"
    written = report.write_tables(out, loaded, PROFILES)
    assert sorted(p.name for p in written) == ["tables.csv", "tables.md", "tables.tex"]
    assert (out / "tables.md").read_text() == report.render_markdown(EVALS, PROFILES)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize(
    "payload,match",
    [
        ("[1, 2]", "expected"),
        ('{"teacher": {"benchmark": {"cc": "high"}}}', "not a number"),
        ('{"teacher": {"benchmark": 0.5}}', "metric names"),
        ("{not json", "cannot read"),
    ],
)
def test_load_evaluations_rejects_other_shapes(tmp_path, payload, match):
    p = tmp_path / "osie.json"
    p.write_text(payload)
    with pytest.raises(ValueError, match=match):
        report.load_evaluations([p])


def test_load_profiles_requires_the_three_fields(tmp_path):
    good, bad = tmp_path / "t.json", tmp_path / "s.json"
    good.write_text(json.dumps(PROFILES["teacher"]))
    bad.write_text(json.dumps({"params": 1}))
    assert report.load_profiles({"teacher": good}) == {"teacher": PROFILES["teacher"]}
    with pytest.raises(ValueError, match="lacks"):
        report.load_profiles({"student": bad})


def test_latencies_are_looked_up_by_backbone_width_and_size(tmp_path):
    path = tmp_path / "latency.json"
    assert report.load_latencies(path) == []  # absent: no latencies, the table shows dashes
    entries = [
        {"backbone": "mobilenet_v2", "width": 1.0, "input_size": [288, 384], "cpu_latency_ms": 41.5},
        {"backbone": "mobilenet_v2", "width": 0.75, "input_size": [288, 384], "cpu_latency_ms": 30.25},
    ]
    path.write_text(json.dumps({"setting": {}, "entries": entries}))
    got = report.load_latencies(path)
    assert report.latency_of(got, "mobilenet_v2", 1, (288, 384)) == 41.5
    assert report.latency_of(got, "mobilenet_v2", 0.75, [288, 384]) == 30.25
    assert report.latency_of(got, "mobilenet_v2", 1.0, [96, 128]) is None  # another size
    assert report.latency_of(got, "eeea_c2", 1.0, [288, 384]) is None
    path.write_text(json.dumps({"entries": [{"backbone": "x", "width": 1.0}]}))
    with pytest.raises(ValueError, match=r"latency.json: entry 0 lacks \['cpu_latency_ms', 'input_size'\]"):
        report.load_latencies(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="latency.json: not a latency file"):
        report.load_latencies(path)


def test_benchmark_latency_script_writes_what_the_report_reads(tmp_path):
    """benchmarks/latency.py measures the params' teacher and student and keeps other entries."""
    import importlib.util

    import yaml

    from pipeline_copy import REPO

    spec = importlib.util.spec_from_file_location("bench_latency", REPO / "benchmarks/latency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["teacher"]["backbone"] = params["student"]["backbone"] = "mobilenet_v2"
    params["teacher"]["pretrained"] = params["student"]["pretrained"] = False
    params["report"] = {"latency_input_size": [32, 48], "latency_repeats": 1}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "latency.json"
    old = {"backbone": "other", "width": 1.0, "input_size": [32, 48], "cpu_latency_ms": 9.0}
    out.write_text(json.dumps({"entries": [old]}))
    assert mod.main(["--params", str(tmp_path / "p.yaml"), "--output", str(out)]) == 0
    got = report.load_latencies(out)
    assert [e["backbone"] for e in got] == ["mobilenet_v2", "other"]
    assert report.latency_of(got, "mobilenet_v2", 1.0, [32, 48]) > 0
    assert json.loads(out.read_text())["setting"]["threads"] == 1


def _png_shape(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path).shape


def test_examples_grid_has_one_row_per_example(tmp_path):
    rng = np.random.default_rng(0)

    def ex(name):
        d = rng.random((20, 30)).astype(np.float32)
        return Example(
            name=name,
            image=(rng.random((20, 30, 3)) * 255).astype(np.uint8),
            density=d,
            fixations=d > 0.9,
            predictions={"teacher": d, "student": d[::-1].copy(), "center_bias": d},
        )

    one = _png_shape(report.plot_examples_grid([ex("a")], tmp_path / "one.png", title="MIT1003"))
    three = _png_shape(report.plot_examples_grid([ex("a"), ex("b"), ex("c")], tmp_path / "three.png"))
    assert three[0] > 2 * one[0]  # taller with more rows
    assert abs(three[1] - one[1]) < 0.2 * one[1]  # same columns
    with pytest.raises(ValueError, match="no examples"):
        report.plot_examples_grid([], tmp_path / "none.png")


def _dvclive_history(run_dir, name, values):
    """Write a history exactly as dvclive does (the real library, offline)."""
    from dvclive import Live

    with Live(str(run_dir), save_dvc_exp=False, report=None, dvcyaml=None) as live:
        for v in values:
            for k, x in zip(name, v, strict=True):
                live.log_metric(k, x)
            live.next_step()


def test_learning_curves_read_real_dvclive_histories(tmp_path):
    _dvclive_history(tmp_path / "distill", ("train/loss", "val/cc"), [(1.0, 0.2), (0.7, 0.4), (0.5, 0.5)])
    _dvclive_history(tmp_path / "teacher", ("train/loss",), [(2.0,), (1.5,)])
    h = report.read_dvclive_history(tmp_path / "distill")
    assert set(h) == {"train/loss", "val/cc"}
    steps, vals = h["val/cc"]
    assert steps.tolist() == [0, 1, 2] and vals.tolist() == [0.2, 0.4, 0.5]
    path = report.plot_learning_curves({"student": tmp_path / "distill", "teacher": tmp_path / "teacher"},
                                       tmp_path / "curves.png")
    assert _png_shape(path)[0] > 50
    with pytest.raises(FileNotFoundError, match="no dvclive history"):
        report.read_dvclive_history(tmp_path / "missing")


def test_ablation_gap_chart(tmp_path, caplog):
    path = report.plot_ablation_gap(EVALS, tmp_path / "gap.png", protocol="model_resolution")
    assert _png_shape(path)[1] > 200
    partial = {**EVALS, "osie": {"student": _scores(0.5)}}
    report.plot_ablation_gap(partial, tmp_path / "gap2.png")
    assert "osie" in caplog.text
    with pytest.raises(ValueError, match="no benchmark"):
        report.plot_ablation_gap({"osie": {"student": _scores(0.5)}}, tmp_path / "gap3.png")


def test_markdown_states_the_data_it_was_made_from():
    note = "Data: the generated embedded default."
    md = report.render_markdown(EVALS, PROFILES, data_note=note)
    assert note in md.split("## ")[0]
    assert "Data:" not in report.render_markdown(EVALS, PROFILES)


def test_real_eyecrowd_collector_merges_both_arms(tmp_path, monkeypatch):
    """benchmarks/real_eyecrowd.py turns each arm's evaluate outputs into rows that the report
    renders: fine-tuned and zero-shot students side by side, the labelled set's val apart."""
    import importlib.util

    import yaml

    from pipeline_copy import REPO

    spec = importlib.util.spec_from_file_location("real_eyecrowd", REPO / "benchmarks/real_eyecrowd.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params/osie_eyecrowd.yaml").read_text())
    scores = {m: _scores(0.5 + 0.1 * i) for i, m in enumerate(["teacher", "student", "student_no_pseudo", "center_bias"])}
    (tmp_path / "reports/evaluate/labelled").mkdir(parents=True)
    (tmp_path / "reports/evaluate/eyecrowd.json").write_text(json.dumps(scores))
    (tmp_path / "reports/evaluate/labelled/osie.json").write_text(json.dumps(scores))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "real"
    assert mod.main(["--arm", "finetuned", "--wall-s", "600", "--out", str(out)]) == 0
    with pytest.raises(SystemExit, match="finetune.epochs is 4"):
        mod.main(["--arm", "zero_shot", "--out", str(out)])
    params["finetune"]["epochs"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    zero = {k: _scores(0.2) for k in scores}
    (tmp_path / "reports/evaluate/eyecrowd.json").write_text(json.dumps(zero))
    assert mod.main(["--arm", "zero_shot", "--out", str(out)]) == 0
    res = report.load_real_results(out / "eyecrowd.json")
    assert [r["key"] for r in res["rows"]] == [
        "teacher", "student_finetuned", "student_no_pseudo_finetuned", "student_zero_shot",
        "student_no_pseudo_zero_shot", "center_bias"]
    by = {r["key"]: r for r in res["rows"]}
    assert by["student_finetuned"]["metrics"] == scores["student"] and by["student_zero_shot"]["metrics"] == zero["student"]
    assert by["student_finetuned"]["epochs"] == 4 and by["student_zero_shot"]["epochs"] == 0
    assert "EyeCrowd val (100)" in res["heading"]
    md = report.render_real_section(res)
    assert "zero-shot (OSIE only)" in md and "fine-tuned on EyeCrowd train (4 epochs)" in md
    osie = report.load_real_results(out / "eyecrowd_osie_val.json")
    assert [r["key"] for r in osie["rows"]] == ["teacher", "student", "student_no_pseudo", "center_bias"]
