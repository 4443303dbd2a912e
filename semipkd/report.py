"""Tables and figures from the evaluation results.

Inputs are plain data: per benchmark the nested scores of ``reports/evaluate/<benchmark>.json``
(``{model: {protocol: {metric: value}}}``), per model a profile (``params``, ``macs``,
``cpu_latency_ms``), evaluation examples (:class:`semipkd.evaluate.Example`), and
dvclive-style history folders. Outputs:

* ``tables.md`` / ``tables.tex``: the paper's table shape, one table per protocol and benchmark,
  one row per model with parameters, MACs and CPU latency beside CC, KLD, NSS, SIM, AUC-Judd and
  sAUC. Published reference numbers appear as their own rows, labelled ``published`` with their
  source. Numbers are rounded here and only here.
* ``tables.csv``: the same rows in long form with every metric at full precision.
* PNG figures drawn with matplotlib's Agg backend (no display, no network).
* The seeded study (``reports/real/claim.json``, written by ``benchmarks/claim.py``): a section
  of ``tables.md`` and ``figures/claim.png``.

Every file goes through :mod:`semipkd.io`'s atomic writes.
"""

from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a display (stages run headless)
import matplotlib.pyplot as plt
import numpy as np

from semipkd.errors import SemipkdError
from semipkd.io import atomic_write_bytes, atomic_write_text
from semipkd.names import (
    DATASET_LABELS,
    DATASETS,
    METRIC_NAMES,
    MODEL_KEYS,
    MODEL_LABELS,
    PROTOCOL_LABELS,
    PROTOCOLS,
    TABLE_METRICS,
)

__all__ = [
    "TABLE_METRICS",
    "format_paired",
    "ALL_METRICS",
    "PublishedResult",
    "PUBLISHED",
    "load_evaluations",
    "load_profiles",
    "LATENCY_FILE",
    "LABELLED_SUFFIX",
    "labelled_key",
    "load_latencies",
    "latency_of",
    "render_markdown",
    "render_csv",
    "render_latex",
    "write_tables",
    "plot_examples_grid",
    "plot_learning_curves",
    "read_dvclive_history",
    "plot_ablation_gap",
    "load_real_results",
    "render_real_section",
    "append_real_section",
    "CLAIM_FILE",
    "CLAIM_RULE",
    "CLAIM_PRIMARY_METRICS",
    "CLAIM_PRIMARY_PROTOCOL",
    "ClaimFormatError",
    "load_claim",
    "render_claim_section",
    "append_claim_section",
    "plot_claim",
]

log = logging.getLogger(__name__)

#: Every metric of semipkd.metrics, in the CSV's column order.
ALL_METRICS = METRIC_NAMES
_METRIC_HEADERS = {
    "cc": "CC↑",
    "kld": "KLD↓",
    "nss": "NSS↑",
    "sim": "SIM↑",
    "auc_judd": "AUC-J↑",
    "auc_borji": "AUC-B↑",
    "sauc": "sAUC↑",
    "info_gain": "IG↑",
}
_TEX_METRIC_HEADERS = {
    "cc": r"CC$\uparrow$",
    "kld": r"KLD$\downarrow$",
    "nss": r"NSS$\uparrow$",
    "sim": r"SIM$\uparrow$",
    "auc_judd": r"AUC-J$\uparrow$",
    "sauc": r"sAUC$\uparrow$",
}
_BENCHMARK_ORDER = DATASETS
_BENCHMARK_LABELS = DATASET_LABELS
#: Key suffix of the labelled set's own val results (``evaluate_labelled``) among the evaluations.
LABELLED_SUFFIX = ":labelled"


def labelled_key(name: str) -> str:
    """The evaluations key of the labelled set's val results (distinct from a benchmark's)."""
    return f"{name}{LABELLED_SUFFIX}"


def _base(key: str) -> str:
    return key.removesuffix(LABELLED_SUFFIX)


def _label(key: str, short: bool = False) -> str:
    """Heading name of an evaluations key; the labelled set's says what its students are."""
    label = _BENCHMARK_LABELS.get(_base(key), _base(key))
    if not key.endswith(LABELLED_SUFFIX):
        return label
    return f"{label} (labelled)" if short else f"{label} (the labelled set; students before fine-tuning)"
_MODEL_ORDER = MODEL_KEYS
_MODEL_LABELS = MODEL_LABELS
_PROTOCOL_ORDER = PROTOCOLS
_PROTOCOL_LABELS = PROTOCOL_LABELS
_OURS = "ours"


@dataclass(frozen=True)
class PublishedResult:
    """A reference number set from the literature, shown beside ours and never mixed with it."""

    benchmark: str
    model: str
    source: str
    metrics: Mapping[str, float]
    note: str = ""


_PKD_SOURCE = (
    "PKD code README, github.com/chakkritte/PKD, 'Results of single teacher method for student "
    "(EEEA-Net-C2) on Salicon dataset'"
)
_PKD_NOTE = "SALICON val, maps at 480x640, their validate.py (batch means averaged over batches)"

#: Published reference numbers: the authors' earlier PKD code on SALICON val.
PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult(
        benchmark="salicon",
        model="PKD EEEA-Net-C2 (teacher EfficientNet-B4)",
        source=_PKD_SOURCE,
        metrics={"cc": 0.9055, "kld": 0.1924, "nss": 1.9346},
        note=_PKD_NOTE,
    ),
    PublishedResult(
        benchmark="salicon",
        model="PKD EEEA-Net-C2 (teacher OFA-595)",
        source=_PKD_SOURCE,
        metrics={"cc": 0.9062, "kld": 0.1907, "nss": 1.9298},
        note=_PKD_NOTE,
    ),
)


# --------------------------------------------------------------------------------------------
# Inputs


def load_evaluations(paths: Sequence[str | Path]) -> dict[str, dict]:
    """Read ``reports/evaluate/<benchmark>.json`` files; the benchmark is the file's stem.

    Returns ``{benchmark: {model: {protocol: {metric: float}}}}``. A file that is not this
    nesting raises ``ValueError`` naming it.
    """
    out: dict[str, dict] = {}
    for p in paths:
        p = Path(p)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: cannot read evaluation JSON ({e})") from e
        _check_scores(data, str(p))
        out[p.stem] = data
    return out


def _check_scores(data: Any, where: str) -> None:
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{where}: expected {{model: {{protocol: {{metric: number}}}}}}, got {type(data).__name__}")
    for model, per_model in data.items():
        if not isinstance(per_model, Mapping):
            raise ValueError(f"{where}: {model!r} must map protocols to metrics")
        for protocol, per_protocol in per_model.items():
            if not isinstance(per_protocol, Mapping):
                raise ValueError(f"{where}: {model}/{protocol} must map metric names to numbers")
            for metric, value in per_protocol.items():
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ValueError(f"{where}: {model}/{protocol}/{metric} is {value!r}, not a number")


def load_profiles(paths: Mapping[str, str | Path]) -> dict[str, dict[str, float]]:
    """Read one profile JSON per model (``{"params", "macs", "cpu_latency_ms"}``)."""
    out = {}
    for model, p in paths.items():
        try:
            data = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: cannot read profile JSON for {model!r} ({e})") from e
        missing = {"params", "macs", "cpu_latency_ms"} - set(data)
        if missing:
            raise ValueError(f"{p}: profile of {model!r} lacks {sorted(missing)}")
        out[model] = data
    return out


#: CPU latencies measured by ``benchmarks/latency.py``; the report reads them from here so that
#: the rendered tables (DVC outputs) do not change between identical reruns.
LATENCY_FILE = Path("reports/benchmarks/latency.json")


def load_latencies(path: str | Path = LATENCY_FILE) -> list[dict[str, Any]]:
    """The entries of a ``benchmarks/latency.py`` output; ``[]`` when the file does not exist.

    Each entry holds ``backbone``, ``width``, ``input_size`` ([h, w]) and ``cpu_latency_ms``.
    A file that exists but is not of that shape raises ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["entries"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a latency file written by benchmarks/latency.py ({e!r})") from e
    for i, entry in enumerate(entries):
        missing = {"backbone", "width", "input_size", "cpu_latency_ms"} - set(entry)
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {sorted(missing)}")
    return entries


def latency_of(entries: Sequence[Mapping[str, Any]], backbone: str, width: float, input_size: Sequence[int]) -> float | None:
    """The measured CPU latency (ms) of ``backbone`` at ``width`` and ``input_size``, or None."""
    for e in entries:
        if e["backbone"] == backbone and float(e["width"]) == float(width) and list(e["input_size"]) == list(input_size):
            return float(e["cpu_latency_ms"])
    return None


# --------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class _Row:
    benchmark: str
    protocol: str  # a protocol key, or "published"
    model: str  # key for ours, description for published rows
    label: str
    source: str
    profile: Mapping[str, float]
    metrics: Mapping[str, float]


def _ordered(keys, order) -> list[str]:
    keys = list(keys)
    return [k for k in order if k in keys] + sorted(k for k in keys if k not in order)


def _rows(
    evaluations: Mapping[str, Mapping],
    profiles: Mapping[str, Mapping[str, float]],
    published: Sequence[PublishedResult],
) -> dict[tuple[str, str], list[_Row]]:
    """Rows grouped by (benchmark, protocol): ours first, then the benchmark's published rows."""
    tables: dict[tuple[str, str], list[_Row]] = {}
    benchmarks = sorted(evaluations, key=lambda k: (not k.endswith(LABELLED_SUFFIX), _BENCHMARK_ORDER.index(_base(k))
                                                    if _base(k) in _BENCHMARK_ORDER else len(_BENCHMARK_ORDER), k))
    for b in benchmarks:
        scores = evaluations[b]
        protocols = _ordered({p for per in scores.values() for p in per}, _PROTOCOL_ORDER)
        for proto in protocols:
            rows = []
            for m in _ordered(scores, _MODEL_ORDER):
                if proto not in scores[m]:
                    continue
                rows.append(_Row(b, proto, m, _MODEL_LABELS.get(m, m), _OURS, profiles.get(m, {}), scores[m][proto]))
            for pub in published:
                # Published numbers are of models trained on that set, before any fine-tuning:
                # they sit beside the labelled set's own val results.
                if b.endswith(LABELLED_SUFFIX) and pub.benchmark == _base(b):
                    rows.append(_Row(b, "published", pub.model, pub.model, f"published: {pub.source}", {}, pub.metrics))
            tables[(b, proto)] = rows
    return tables


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _profile_cells(profile: Mapping[str, float]) -> list[str]:
    p, m, t = profile.get("params"), profile.get("macs"), profile.get("cpu_latency_ms")
    return [
        _fmt(None if p is None else p / 1e6, 2),
        _fmt(None if m is None else m / 1e9, 2),
        _fmt(t, 1),
    ]


def _published_footnotes(published: Sequence[PublishedResult], benchmarks: Sequence[str]) -> list[str]:
    seen = []
    for p in published:
        if labelled_key(p.benchmark) in benchmarks and (p.source, p.note) not in seen:
            seen.append((p.source, p.note))
    return [f"{src}" + (f" ({note})" if note else "") for src, note in seen]


def render_markdown(
    evaluations: Mapping[str, Mapping],
    profiles: Mapping[str, Mapping[str, float]],
    published: Sequence[PublishedResult] = PUBLISHED,
    *,
    data_note: str | None = None,
) -> str:
    """``tables.md``: one table per (protocol, benchmark); rows = models, paper's columns.

    Params in millions, MACs in billions (G), CPU latency in ms, metrics to 4 decimals; a dash
    where a number does not exist (e.g. a published row's SIM, or the center bias's latency).
    """
    tables = _rows(evaluations, profiles, published)
    lines = [
        "# Results",
        "",
        "Generated by `semipkd.report` from `reports/evaluate/*.json` and the model profiles;"
        " how each number is computed: docs/evaluation.md.",
        "CPU (ms): batch 1, median, as measured by `python benchmarks/latency.py` into"
        " `reports/benchmarks/latency.json` (a dash where it has no entry for the model).",
        "Rows marked *published* are copied from their source, not measured here.",
        *([data_note] if data_note else []),
        "",
    ]
    header = ["Model", "Source", "Params (M)", "MACs (G)", "CPU (ms)"] + [_METRIC_HEADERS[m] for m in TABLE_METRICS]
    for proto in _PROTOCOL_ORDER + tuple(sorted({p for _, p in tables} - set(_PROTOCOL_ORDER))):
        keys = [k for k in tables if k[1] == proto]
        if not keys:
            continue
        lines += [f"## {_PROTOCOL_LABELS.get(proto, proto)}", ""]
        for b, _ in keys:
            lines += [f"### {_label(b)} (val)", ""]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join([":--", ":--"] + ["--:"] * (len(header) - 2)) + "|")
            for r in tables[(b, proto)]:
                source = "ours" if r.source == _OURS else "*published*"
                cells = [r.label, source] + _profile_cells(r.profile) + [_fmt(r.metrics.get(m), 4) for m in TABLE_METRICS]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            lines.append("")
    notes = _published_footnotes(published, list(evaluations))
    if notes:
        lines += ["Sources of published rows:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def render_csv(
    evaluations: Mapping[str, Mapping],
    profiles: Mapping[str, Mapping[str, float]],
    published: Sequence[PublishedResult] = PUBLISHED,
) -> str:
    """``tables.csv``: long form, one row per (benchmark, protocol, model), every metric unrounded.

    Columns: benchmark, protocol, model, label, source, params, macs, cpu_latency_ms and the
    eight metric names; empty cells where a value does not exist. Published rows have protocol
    ``published`` and their source in ``source``.
    """
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["benchmark", "protocol", "model", "label", "source", "params", "macs", "cpu_latency_ms", *ALL_METRICS])
    seen_published = set()
    for (b, _), rows in _rows(evaluations, profiles, published).items():
        for r in rows:
            if r.protocol == "published":
                # A published row appears under every protocol in md/tex; once here.
                if (b, r.model) in seen_published:
                    continue
                seen_published.add((b, r.model))
            prof = [_csv_num(r.profile.get(k)) for k in ("params", "macs", "cpu_latency_ms")]
            w.writerow([b, r.protocol, r.model, r.label, r.source, *prof, *[_csv_num(r.metrics.get(m)) for m in ALL_METRICS]])
    return buf.getvalue()


def _csv_num(v: float | None) -> str:
    if v is None:
        return ""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # counts (params, MACs) stay integers
    return repr(float(v))


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(c, c) for c in s).replace("–", "--")


def render_latex(
    evaluations: Mapping[str, Mapping],
    profiles: Mapping[str, Mapping[str, float]],
    published: Sequence[PublishedResult] = PUBLISHED,
) -> str:
    """``tables.tex``: the md tables as booktabs ``table`` environments (needs ``booktabs``)."""
    tables = _rows(evaluations, profiles, published)
    out = ["% Generated by semipkd.report; requires \\usepackage{booktabs}.", ""]
    ncols = 4 + len(TABLE_METRICS)
    for proto in _PROTOCOL_ORDER + tuple(sorted({p for _, p in tables} - set(_PROTOCOL_ORDER))):
        for b, p in tables:
            if p != proto:
                continue
            rows = tables[(b, p)]
            out += [
                r"\begin{table}[t]",
                r"\centering",
                rf"\caption{{{_tex(_label(b))} val, {_tex(_PROTOCOL_LABELS.get(proto, proto))}."
                r" Rows marked $^\dagger$ are published numbers, not measured here.}",
                rf"\label{{tab:{b.replace('_', '-')}-{proto.replace('_', '-')}}}",
                r"\begin{tabular}{l" + "r" * (ncols - 1) + "}",
                r"\toprule",
                " & ".join(["Model", "Params (M)", "MACs (G)", "CPU (ms)"] + [_TEX_METRIC_HEADERS[m] for m in TABLE_METRICS])
                + r" \\",
                r"\midrule",
            ]
            for r in rows:
                label = _tex(r.label) + ("" if r.source == _OURS else r"$^\dagger$")
                numbers = _profile_cells(r.profile) + [_fmt(r.metrics.get(m), 4) for m in TABLE_METRICS]
                out.append(" & ".join([label] + [_tex(c) for c in numbers]) + r" \\")
            out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    notes = _published_footnotes(published, list(evaluations))
    if notes:
        out += ["% Sources of published rows:"] + [f"% - {n}" for n in notes] + [""]
    return "\n".join(out)


def write_tables(
    out_dir: str | Path,
    evaluations: Mapping[str, Mapping],
    profiles: Mapping[str, Mapping[str, float]],
    published: Sequence[PublishedResult] = PUBLISHED,
    *,
    data_note: str | None = None,
) -> list[Path]:
    """Write ``tables.md``, ``tables.csv`` and ``tables.tex`` into ``out_dir`` atomically."""
    if not evaluations:
        raise ValueError("write_tables: no evaluation results given")
    out_dir = Path(out_dir)
    written = []
    for name, render in (("tables.md", render_markdown), ("tables.csv", render_csv), ("tables.tex", render_latex)):
        path = out_dir / name
        extra = {"data_note": data_note} if render is render_markdown else {}
        atomic_write_text(path, render(evaluations, profiles, published, **extra))
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Figures


def _save(fig: "plt.Figure", path: str | Path, dpi: int = 110) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_examples_grid(
    examples: Sequence[Any],
    path: str | Path,
    *,
    models: Sequence[str] = ("teacher", "student"),
    title: str = "",
) -> Path:
    """Per-benchmark grid: one row per example; image, ground truth, then each model's map.

    ``examples`` are :class:`semipkd.evaluate.Example` (``name``, ``image`` uint8 (h, w, 3),
    ``density`` float (h, w), ``fixations`` bool (h, w), ``predictions`` name -> (h, w)).
    Fixations are drawn as red dots over the ground truth and over every model's map. Models
    missing from an example are skipped with a warning.
    """
    if not examples:
        raise ValueError(f"{path}: no examples to draw")
    present = [m for m in models if all(m in e.predictions for e in examples)]
    for m in models:
        if m not in present:
            log.warning("examples grid %s: model %r missing from the examples, column left out", path, m)
    cols = ["image", "ground truth"] + [_MODEL_LABELS.get(m, m) for m in present]
    # rows as tall as their images are at the columns' width, so no band of white between them
    aspects = [e.density.shape[0] / e.density.shape[1] for e in examples]
    cell = 2.2
    fig, axes = plt.subplots(
        len(examples),
        len(cols),
        figsize=(cell * len(cols), cell * sum(aspects) + 0.6),
        squeeze=False,
        gridspec_kw={"height_ratios": aspects},
        layout="constrained",
    )
    for r, e in enumerate(examples):
        ys, xs = np.nonzero(e.fixations)
        panels = [e.image, e.density] + [e.predictions[m] for m in present]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            if c == 0:
                ax.imshow(panel)
                ax.set_ylabel(str(e.name), fontsize=7)
            else:
                # each map stretched to its own range: the scale of a saliency map carries no
                # meaning (every metric normalises it), its shape does
                lo, hi = float(np.min(panel)), float(np.max(panel))
                ax.imshow(panel, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1.0)
                ax.scatter(xs, ys, s=2, c="red", marker="o", linewidths=0)
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def read_dvclive_history(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-epoch histories dvclive wrote under ``<run_dir>/plots/metrics/**/<name>.tsv``.

    Returns ``{metric path relative to plots/metrics without .tsv: (steps, values)}``, e.g.
    ``{"train/loss": (array([0, 1, ...]), array([...]))}``. Each TSV has a ``step`` column and
    one value column named like the file (dvclive adds a ``timestamp`` column, ignored).
    """
    import pandas as pd

    root = Path(run_dir) / "plots" / "metrics"
    if not root.is_dir():
        raise FileNotFoundError(f"{run_dir}: no dvclive history (expected folder {root})")
    out = {}
    for tsv in sorted(root.rglob("*.tsv")):
        key = tsv.relative_to(root).with_suffix("").as_posix()
        df = pd.read_csv(tsv, sep="\t")
        value_cols = [c for c in df.columns if c not in ("step", "timestamp")]
        if "step" not in df.columns or len(value_cols) != 1:
            raise ValueError(f"{tsv}: expected columns step and one value column, got {list(df.columns)}")
        out[key] = (df["step"].to_numpy(), df[value_cols[0]].to_numpy(dtype=np.float64))
    return out


def plot_learning_curves(runs: Mapping[str, str | Path] | Sequence[str | Path], path: str | Path) -> Path:
    """Learning curves: one panel per metric, one line per run (a dvclive folder).

    ``runs`` maps a label to a dvclive folder, or is a list of folders (labelled by folder name).
    """
    if not isinstance(runs, Mapping):
        runs = {Path(r).name: r for r in runs}
    if not runs:
        raise ValueError(f"{path}: no runs given")
    histories = {label: read_dvclive_history(d) for label, d in runs.items()}
    names = sorted({k for h in histories.values() for k in h})
    if not names:
        raise ValueError(f"{path}: the runs {list(runs)} hold no .tsv histories")
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 2.8 * nrows), squeeze=False, layout="constrained")
    # strict=False: the grid can have more panels than names; the spare ones are hidden below.
    for ax, name in zip(axes.flat, names, strict=False):
        for label, h in histories.items():
            if name in h:
                steps, vals = h[name]
                ax.plot(steps, vals, marker="o", markersize=2.5, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_ablation_gap(
    evaluations: Mapping[str, Mapping],
    path: str | Path,
    *,
    protocol: str = "benchmark",
    metrics: Sequence[str] = TABLE_METRICS,
    student: str = "student",
    ablation: str = "student_no_pseudo",
) -> Path:
    """Bar chart of ``student - student_no_pseudo`` per benchmark, one panel per metric.

    A positive bar means pseudo-labels helped, except for KLD where lower is better (its panel
    says so). Benchmarks lacking either model are left out with a warning.
    """
    benchmarks = []
    for b in _ordered(evaluations, _BENCHMARK_ORDER):
        s = evaluations[b]
        if student in s and ablation in s and protocol in s[student] and protocol in s[ablation]:
            benchmarks.append(b)
        else:
            log.warning("ablation gap: %s lacks %s or %s under protocol %s; left out", b, student, ablation, protocol)
    if not benchmarks:
        raise ValueError(f"{path}: no benchmark has both {student!r} and {ablation!r} under {protocol!r}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.0), squeeze=False, layout="constrained")
    x = np.arange(len(benchmarks))
    for ax, m in zip(axes[0], metrics, strict=True):
        gaps = np.array(
            [evaluations[b][student][protocol].get(m, np.nan) - evaluations[b][ablation][protocol].get(m, np.nan)
             for b in benchmarks]
        )
        better = (gaps < 0) if m == "kld" else (gaps > 0)
        ax.bar(x, gaps, color=np.where(better, "tab:green", "tab:red"))
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(x, [_label(b, short=True) for b in benchmarks], rotation=45, ha="right", fontsize=7)
        ax.set_title(_METRIC_HEADERS.get(m, m) + (" (lower is better)" if m == "kld" else ""), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Student minus student without pseudo-labels ({protocol} protocol); green = pseudo-labels helped", fontsize=9)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# Real-data results (reports/real/osie.json, docs/real_osie.md)

#: Columns of the real-data section: every metric of semipkd.metrics.
_REAL_SOURCES = ("measured", "published")


def load_real_results(path: str | Path) -> dict[str, Any]:
    """Read a real-data results file (``reports/real/osie.json``) and check its shape.

    The file is ``{"heading": str, "description": [str, ...], "rows": [row, ...],
    "notes": [str, ...]}``; a row is ``{"key", "label", "source": "measured" | "published",
    "input_size": [H, W] or null, "epochs": int or null, "wall_s": float or null,
    "metrics": {protocol: {metric: float}}, "note": str}``. A *measured* row must carry all
    eight metrics of :data:`ALL_METRICS` under each protocol it lists; a *published* row carries
    whatever its source reported. Raises ``ValueError`` naming the file and the row.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read real-data results JSON ({e})") from e
    if not isinstance(data, Mapping) or not isinstance(data.get("heading"), str) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: expected an object with a 'heading' string and a 'rows' list")
    if not data["rows"]:
        raise ValueError(f"{path}: 'rows' is empty")
    for i, row in enumerate(data["rows"]):
        where = f"{path}: row {i} ({row.get('key', '?') if isinstance(row, Mapping) else '?'})"
        if not isinstance(row, Mapping) or not {"key", "label", "source", "metrics"} <= set(row):
            raise ValueError(f"{where}: needs 'key', 'label', 'source' and 'metrics'")
        if row["source"] not in _REAL_SOURCES:
            raise ValueError(f"{where}: source {row['source']!r} is not one of {', '.join(_REAL_SOURCES)}")
        _check_scores({row["key"]: row["metrics"]}, where)
        if row["source"] == "measured":
            for proto, per in row["metrics"].items():
                missing = sorted(set(ALL_METRICS) - set(per))
                if missing:
                    raise ValueError(f"{where}: measured row lacks {', '.join(missing)} under {proto}")
    return dict(data)


def _minutes(seconds: float | None) -> str:
    return _fmt(None if seconds is None else seconds / 60.0, 1)


def render_real_section(results: Mapping[str, Any]) -> str:
    """Markdown section for a real-data results file (see :func:`load_real_results`).

    One table per protocol present in the measured rows (benchmark first); published rows
    appear in the table of the protocol they are filed under, marked *published*. Columns: the
    model, source, input size, epochs, wall time in minutes and all eight metrics (4 decimals;
    a dash where a number does not exist). The heading says what data and budget produced it.
    """
    rows = list(results["rows"])
    protocols = _ordered({p for r in rows for p in r["metrics"]}, _PROTOCOL_ORDER)
    lines = [f"## {results['heading']}", ""]
    for para in results.get("description", []):
        lines += [para, ""]
    header = ["Model", "Source", "Input", "Epochs", "Wall (min)"] + [_METRIC_HEADERS[m] for m in ALL_METRICS]
    for proto in protocols:
        lines += [f"### {_PROTOCOL_LABELS.get(proto, proto)}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([":--", ":--"] + ["--:"] * (len(header) - 2)) + "|")
        for r in rows:
            if proto not in r["metrics"]:
                continue
            size = r.get("input_size")
            cells = [
                r["label"],
                "ours" if r["source"] == "measured" else "*published*",
                "–" if not size else "x".join(map(str, size)),
                "–" if r.get("epochs") is None else str(r["epochs"]),
                _minutes(r.get("wall_s")),
            ] + [_fmt(r["metrics"][proto].get(m), 4) for m in ALL_METRICS]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    notes = list(results.get("notes", [])) + [f"{r['label']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def append_real_section(tables_md: str | Path, results_path: str | Path) -> Path:
    """Append :func:`render_real_section` of ``results_path`` to ``tables_md`` (atomically)."""
    tables_md = Path(tables_md)
    text = tables_md.read_text(encoding="utf-8")
    section = render_real_section(load_real_results(results_path))
    atomic_write_text(tables_md, text.rstrip("\n") + "\n\n" + section)
    return tables_md


# --------------------------------------------------------------------------------------------
# The seeded study (reports/real/claim.json, written by benchmarks/claim.py)

#: Where ``benchmarks/claim.py`` writes the seeded study and the report stage reads it. It lives
#: beside the real-data results files but has its own schema (see :func:`load_claim`).
CLAIM_FILE = Path("reports/real/claim.json")
#: The primary comparisons, named before the results were looked at (issue 24): CC and KLD under
#: the benchmark protocol. Every other metric and protocol is secondary (Holm-adjusted).
CLAIM_PRIMARY_METRICS = ("cc", "kld")
CLAIM_PRIMARY_PROTOCOL = "benchmark"
#: When a paired difference counts as a win (claim.json's ``rule``; the report quotes it).
CLAIM_RULE = (
    "paired difference d = first - second per seed (seeds both have; 'paired' is semi_pkd - labelled_only), "
    "two-sided paired t-test (one-sample t on d, df = n - 1), 95% CI of the mean d = mean ± "
    "t(0.975, n-1) · std / sqrt(n) (std: sample, ddof=1). Primary comparisons, named before looking: "
    "CC and KLD under the benchmark protocol; a primary verdict names the better arm only when the 95% CI "
    "excludes 0 (the same as p < 0.05). Every other metric and protocol is secondary: its p-values are "
    "Holm-adjusted across the secondary metrics of the same comparison and protocol (p_holm), and a "
    "secondary verdict names the better arm only when p_holm < 0.05. Better is in the metric's direction "
    "(KLD: lower is better, every other metric: higher); otherwise 'within spread'. Fewer than 2 pairs: "
    "'too few pairs'; every difference equal (std 0): the CI is the point mean, p is 0 (1 when the mean is "
    "0), so the verdict follows the mean's sign"
)
#: What claim.png says when no seeded study has been collected.
CLAIM_ABSENT_TEXT = "no seeded study collected: see docs/real_osie.md"
_CLAIM_ARMS = ("semi_pkd", "labelled_only", "teacher", "center_bias")
_CLAIM_ARM_LABELS = {
    "semi_pkd": "Semi-PKD student",
    "labelled_only": "Labelled-only student (ablation)",
    "teacher": "Teacher",
    "center_bias": "Center bias",
}
_CLAIM_METRICS = ("cc", "kld")
_CLAIM_PROTOCOL_SHORT = {"benchmark": "benchmark", "model_resolution": "model res."}
_STATS_KEYS = {"mean", "std", "n", "values", "seeds"}
#: What every paired difference carries besides :data:`_STATS_KEYS` (benchmarks/claim.py's
#: paired_stats and judge); a file without them was written under the old mean-vs-std rule.
_TEST_KEYS = {"ci95", "t", "df", "p", "test", "primary", "p_holm", "better"}


class ClaimFormatError(SemipkdError, ValueError):
    """``reports/real/claim.json`` is not what ``benchmarks/claim.py`` writes; names the place."""


def _check_stats(stats: Any, where: str) -> None:
    if not isinstance(stats, Mapping) or not _STATS_KEYS <= set(stats):
        raise ClaimFormatError(f"{where}: expected {{{', '.join(sorted(_STATS_KEYS))}}}")
    if len(stats["values"]) != stats["n"] or len(stats["seeds"]) != stats["n"]:
        raise ClaimFormatError(f"{where}: n is {stats['n']} but it has {len(stats['values'])} values "
                               f"and {len(stats['seeds'])} seeds")


def _check_test(stats: Any, where: str) -> None:
    """A paired difference: stats plus the t-test's fields."""
    _check_stats(stats, where)
    missing = _TEST_KEYS - set(stats)
    if missing:
        raise ClaimFormatError(f"{where} lacks {', '.join(sorted(missing))} (written under an older rule: "
                               "run `python benchmarks/claim.py --recompute`)")


def _check_verdicts(tree: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Paired-difference stats ({protocol: {metric: stats + test + verdict}}), each checked."""
    for proto, per in tree.items():
        for m, stats in per.items():
            _check_test(stats, f"{where}/{proto}/{m}")
            if "verdict" not in stats:
                raise ClaimFormatError(f"{where}/{proto}/{m} has no verdict")


def load_claim(path: str | Path = CLAIM_FILE) -> dict[str, Any]:
    """Read the seeded study written by ``benchmarks/claim.py`` and check its shape.

    The file is ``{"rule": str, "arms": {arm: model key}, "settings": {name: setting}}``; a
    setting holds ``benchmark``, ``description``, ``params`` (dotted keys, seed left out),
    ``differs_from`` ({other setting: {key: [this, other]}}), ``seeds``, ``experiments``
    ([{name, rev, seed}]), ``arms`` ({arm: {protocol: {metric: stats}}}) and ``paired``
    ({protocol: {metric: stats + test + verdict}}), where stats is ``{mean, std, n, values,
    seeds}`` (an arm's also ``ci95``, the t-interval of its mean, drawn in claim.png) and test is
    ``{ci95: [low, high], t, df, p, test, primary, p_holm, better}`` (the t-test of
    :data:`CLAIM_RULE`); a label-scarce setting may hold ``upper_bound`` ({setting, arm,
    differs, metrics: {protocol: {metric: {upper: stats, gain: stats + test + verdict, recovered:
    stats + test, share: stats, share_of_means}}}}),
    and a variant ``variant_of`` ({setting, differs, arms: {arm: {protocol: {metric: stats +
    test + verdict}}}, gap: {protocol: {metric: stats + test + verdict}}}).
    Raises :class:`ClaimFormatError` naming the file and the setting.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ClaimFormatError(f"{path}: cannot read the seeded-study JSON ({e})") from e
    if not isinstance(data, Mapping) or not isinstance(data.get("settings"), Mapping) or not data["settings"]:
        raise ClaimFormatError(f"{path}: expected an object with a non-empty 'settings' object (benchmarks/claim.py writes it)")
    for name, s in data["settings"].items():
        where = f"{path}: setting {name!r}"
        missing = {"benchmark", "seeds", "experiments", "arms", "paired"} - set(s if isinstance(s, Mapping) else {})
        if missing:
            raise ClaimFormatError(f"{where} lacks {', '.join(sorted(missing))}")
        for arm, per_arm in s["arms"].items():
            for proto, per in per_arm.items():
                for m, stats in per.items():
                    _check_stats(stats, f"{where}: arms/{arm}/{proto}/{m}")
        _check_verdicts(s["paired"], f"{where}: paired")
        ub = s.get("upper_bound")
        if ub is not None:
            if not isinstance(ub, Mapping) or not isinstance(ub.get("metrics"), Mapping) or "setting" not in ub:
                raise ClaimFormatError(f"{where}: upper_bound needs 'setting' and 'metrics'")
            for proto, per in ub["metrics"].items():
                for m, u in per.items():
                    for part in ("upper", "share"):
                        _check_stats(u.get(part), f"{where}: upper_bound/{proto}/{m}/{part}")
                    for part in ("gain", "recovered"):
                        _check_test(u.get(part), f"{where}: upper_bound/{proto}/{m}/{part}")
                    if "share_of_means" not in u or "verdict" not in u["gain"]:
                        raise ClaimFormatError(f"{where}: upper_bound/{proto}/{m} lacks share_of_means or the gain's verdict")
        var = s.get("variant_of")
        if var is not None:
            if not isinstance(var, Mapping) or not {"setting", "differs", "arms", "gap"} <= set(var):
                raise ClaimFormatError(f"{where}: variant_of needs 'setting', 'differs', 'arms' and 'gap'")
            for part, tree in list(var["arms"].items()) + [("gap", var["gap"])]:
                _check_verdicts(tree, f"{where}: variant_of/{part}")
    return dict(data)


def _pm(stats: Mapping[str, Any] | None, signed: bool = False) -> str:
    """``mean ± std (n)`` with 4 decimals; a dash for a missing number."""
    if not stats or stats.get("mean") is None:
        return "–"
    mean = f"{stats['mean']:+.4f}" if signed else _fmt(stats["mean"], 4)
    return f"{mean} ± {_fmt(stats.get('std'), 4)} ({stats['n']})"


def format_paired(stats: Mapping[str, Any] | None) -> str:
    """A paired difference as ``mean [95% CI low, high], p`` (``p_holm`` for a secondary, see
    :data:`CLAIM_RULE`); the bare mean where there is no interval (fewer than 2 pairs)."""
    if not stats or stats.get("mean") is None:
        return "–"
    if stats.get("ci95") is None:
        return f"{stats['mean']:+.4f} (n={stats['n']})"
    low, high = stats["ci95"]
    p = f"p={_p(stats['p'])}" if stats.get("primary") else f"Holm p={_p(stats['p_holm'])}"
    return f"{stats['mean']:+.4f} [{low:+.4f}, {high:+.4f}], {p}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _claim_protocols(setting: Mapping[str, Any]) -> list[str]:
    return _ordered({p for per in setting["arms"].values() for p in per} | set(setting["paired"]), _PROTOCOL_ORDER)


def _diff_items(diff: Mapping[str, Sequence]) -> list[str]:
    r"""``\`key\` this (there that)`` for each differing param ({key: [this, that]})."""
    return [f"`{k}` {json.dumps(v[0])} (there {json.dumps(v[1])})" for k, v in diff.items()]


def _differences_text(differs: Mapping[str, Mapping[str, Sequence]], limit: int = 6) -> list[str]:
    out = []
    for other, diff in differs.items():
        if not diff:
            out.append(f"the same params as {other} (seed aside)")
            continue
        items = _diff_items(diff)[:limit]
        more = f" and {len(diff) - limit} more" if len(diff) > limit else ""
        out.append(f"vs {other}: " + ", ".join(items) + more)
    return out


def render_claim_section(claim: Mapping[str, Any]) -> str:
    """Markdown section for the seeded study (see :func:`load_claim`).

    One table per setting: rows are the arms (Semi-PKD student, labelled-only student, teacher,
    center bias), columns CC and KLD under each protocol as ``mean ± std (n)``, and a last row
    with the paired difference Semi-PKD minus labelled-only as ``mean [95% CI], p`` and its
    verdict (:data:`CLAIM_RULE`).
    """
    settings = claim["settings"]
    benchmarks = _ordered({s["benchmark"] for s in settings.values()}, _BENCHMARK_ORDER)
    lines = [
        f"## Semi-PKD vs labelled-only, seeded ({', '.join(_label(b) for b in benchmarks)} val)",
        "",
        "Each setting is one params.yaml run under several seeds with DVC's experiment grid "
        "(`dvc exp run --queue -S 'seed=1,2,3'`), collected by `benchmarks/claim.py` into "
        f"`{CLAIM_FILE.as_posix()}` (docs/real_osie.md). Arm cells: mean ± sample std (n seeds). "
        "Paired differences: mean [95% confidence interval of the mean], p of the paired t-test "
        "(primary: CC and KLD benchmark) or Holm-adjusted p (every other cell), then the verdict. "
        f"The verdict rule is: {CLAIM_RULE}.",
        "",
    ]
    for name, s in settings.items():
        lines += [f"### {name} ({_label(s['benchmark'])} val)", ""]
        if s.get("description"):
            lines += [s["description"], ""]
        exps = ", ".join(f"{e['name']} (seed {e['seed']})" for e in s["experiments"])
        lines += [f"Seeds: {', '.join(map(str, s['seeds']))}; experiments: {exps}.", ""]
        diffs = _differences_text(s.get("differs_from", {}))
        if diffs:
            lines += ["Params: " + "; ".join(diffs) + ".", ""]
        protos = _claim_protocols(s)
        header = ["Arm"] + [f"{_METRIC_HEADERS[m]} {_CLAIM_PROTOCOL_SHORT.get(p, p)}" for p in protos for m in _CLAIM_METRICS]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|:--|" + "|".join(["--:"] * (len(header) - 1)) + "|")
        for arm in _ordered(s["arms"], _CLAIM_ARMS):
            cells = [_CLAIM_ARM_LABELS.get(arm, arm)] + [
                _pm(s["arms"][arm].get(p, {}).get(m)) for p in protos for m in _CLAIM_METRICS]
            lines.append("| " + " | ".join(cells) + " |")
        paired = []
        for p in protos:
            for m in _CLAIM_METRICS:
                d = s["paired"].get(p, {}).get(m)
                paired.append(f"{format_paired(d)}: {d['verdict']}" if d else "–")
        lines.append("| " + " | ".join(["Semi-PKD − labelled-only (paired by seed)"] + paired) + " |")
        lines.append("")
        lines += _upper_bound_lines(s.get("upper_bound"), protos)
        lines += _variant_lines(name, s.get("variant_of"), protos)
    return "\n".join(lines)


def _variant_lines(name: str, var: Mapping[str, Any] | None, protos: Sequence[str]) -> list[str]:
    """A variant against the setting it varies (claim.py --variant-of): per arm, this minus that."""
    if not var:
        return []
    changed = ", ".join(_diff_items(var["differs"]))
    header = ["Paired by seed"] + [f"{_METRIC_HEADERS[m]} {_CLAIM_PROTOCOL_SHORT.get(p, p)}"
                                   for p in protos for m in _CLAIM_METRICS]
    lines = [
        f"Variant of setting {var['setting']}: {changed}. Each arm here minus the same arm there, paired by "
        "seed; last row: the change in Semi-PKD's edge (this setting's Semi-PKD − labelled-only minus that one's).",
        "",
        "| " + " | ".join(header) + " |",
        "|:--|" + "|".join(["--:"] * (len(header) - 1)) + "|",
    ]
    rows = [(f"{_CLAIM_ARM_LABELS.get(arm, arm)}: {name} − {var['setting']}", var["arms"][arm])
            for arm in _ordered(var["arms"], _CLAIM_ARMS)]
    rows.append((f"Semi-PKD's edge: {name} − {var['setting']}", var["gap"]))
    for label, tree in rows:
        cells = []
        for p in protos:
            for m in _CLAIM_METRICS:
                d = tree.get(p, {}).get(m)
                cells.append(f"{format_paired(d)}: {d['verdict']}" if d else "–")
        lines.append("| " + " | ".join([label] + cells) + " |")
    lines.append("")
    return lines


def _upper_bound_lines(ub: Mapping[str, Any] | None, protos: Sequence[str]) -> list[str]:
    """The share of the upper bound's gain a label-scarce setting recovers (claim.py --upper-bound)."""
    if not ub:
        return []
    lines = [
        f"Upper bound: setting {ub['setting']}'s labelled-only student, the same recipe with every label. "
        "Gain = upper bound − labelled-only; recovered = Semi-PKD − labelled-only (both paired by seed, "
        "mean [95% CI], p); share = recovered / gain, as the ratio of the means and per seed (no interval: "
        "a ratio of means of three seeds says nothing about its own spread).",
        "",
        "| Metric | Upper bound | Gain (upper − labelled-only) | Recovered (Semi-PKD − labelled-only) "
        "| Share (of means) | Share per seed |",
        "|:--|--:|--:|--:|--:|--:|",
    ]
    for p in protos:
        for m in _CLAIM_METRICS:
            u = ub["metrics"].get(p, {}).get(m)
            if not u:
                continue
            som = "–" if u["share_of_means"] is None else f"{u['share_of_means']:.2f}"
            per_seed = ", ".join(f"{v:.2f}" for v in u["share"]["values"]) or "–"
            lines.append(f"| {_METRIC_HEADERS[m]} {_CLAIM_PROTOCOL_SHORT.get(p, p)} | {_pm(u['upper'])} | "
                         f"{format_paired(u['gain'])}: {u['gain']['verdict']} | {format_paired(u['recovered'])} | "
                         f"{som} | {per_seed} |")
    lines.append("")
    return lines


def append_claim_section(tables_md: str | Path, claim: Mapping[str, Any]) -> Path:
    """Append :func:`render_claim_section` of ``claim`` to ``tables_md`` (atomically)."""
    tables_md = Path(tables_md)
    text = tables_md.read_text(encoding="utf-8")
    atomic_write_text(tables_md, text.rstrip("\n") + "\n\n" + render_claim_section(claim))
    return tables_md


def plot_claim(claim: Mapping[str, Any] | None, path: str | Path, *, protocol: str = "benchmark") -> Path:
    """``claim.png``: per setting a CC and a KLD panel; both students' seed values as dots (a grey
    line joins a seed's two values), their mean and its 95% t-interval as an error bar beside
    them, the paired difference with its 95% CI, p and verdict in the title. With no claim (None) the figure only says
    :data:`CLAIM_ABSENT_TEXT`, so the declared output always exists."""
    settings = dict(claim["settings"]) if claim else {}
    if not settings:
        fig, ax = plt.subplots(figsize=(5.0, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, CLAIM_ABSENT_TEXT, ha="center", va="center", fontsize=10)
        return _save(fig, path)
    pair = ("semi_pkd", "labelled_only")
    colors = ("tab:green", "tab:blue")
    fig, axes = plt.subplots(len(settings), len(_CLAIM_METRICS), figsize=(3.6 * len(_CLAIM_METRICS), 3.0 * len(settings)),
                             squeeze=False, layout="constrained")
    for row, (name, s) in zip(axes, settings.items(), strict=True):
        protos = _claim_protocols(s)
        proto = protocol if protocol in protos else protos[0]
        for ax, m in zip(row, _CLAIM_METRICS, strict=True):
            stats = [s["arms"].get(arm, {}).get(proto, {}).get(m) for arm in pair]
            if all(st is not None for st in stats):
                v0 = dict(zip(stats[0]["seeds"], stats[0]["values"], strict=True))
                for seed, v1 in zip(stats[1]["seeds"], stats[1]["values"], strict=True):
                    if seed in v0:
                        ax.plot([0, 1], [v0[seed], v1], color="0.7", linewidth=0.8, zorder=1)
            for i, st in enumerate(stats):
                if st is None:
                    continue
                ax.scatter(np.full(st["n"], float(i)), st["values"], s=16, color=colors[i], alpha=0.7, zorder=2,
                           label="seeds" if i == 0 else None)
                ci = st.get("ci95")  # the t-interval of the arm's mean (benchmarks/claim.py)
                yerr = [[st["mean"] - ci[0]], [ci[1] - st["mean"]]] if ci else 0.0
                ax.errorbar(i + 0.2, st["mean"], yerr=yerr, fmt="o", color="black", capsize=4, markersize=4,
                            zorder=3, label="mean, 95% CI" if i == 0 else None)
            up = ((s.get("upper_bound") or {}).get("metrics") or {}).get(proto, {}).get(m)
            if up:
                ax.axhline(up["upper"]["mean"], color="tab:purple", linestyle="--", linewidth=1.0, zorder=1,
                           label=f"upper bound ({s['upper_bound']['setting']})")
            ax.set_xticks([0, 1], ["Semi-PKD", "labelled-only"], fontsize=8)
            ax.set_xlim(-0.5, 1.5)
            d = s["paired"].get(proto, {}).get(m)
            title = f"{name}: {_METRIC_HEADERS.get(m, m)} ({_CLAIM_PROTOCOL_SHORT.get(proto, proto)})"
            if d:
                title += f"\ndiff {format_paired(d)}\n{d['verdict']}"
            ax.set_title(title, fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=6, loc="best")
    fig.suptitle("Semi-PKD vs labelled-only, seeded: dots are seeds (a grey line joins one seed's two students), "
                 "black bars each arm's mean and its 95% CI; titles: the paired difference, its 95% CI, p and verdict",
                 fontsize=8)
    return _save(fig, path)
