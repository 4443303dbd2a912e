"""Collect a seeded study of DVC experiments into reports/real/claim.json.

A *setting* is one params.yaml run under several seeds with DVC's own experiment grid; it is
identified by its full params, not by experiment names:

    cp params/osie_real.yaml params.yaml          # the setting (any params.yaml)
    dvc exp run --queue -S 'seed=1,2,3'
    dvc queue start                               # wait until `dvc queue status` shows them done
    python benchmarks/claim.py --setting osie-192 --benchmark osie --description "..."

The collector runs ``dvc exp show --json -A`` (or reads ``--exp-show FILE``) and takes every
experiment that ran to the end (not the workspace or baseline-commit rows, not queued, running
or failed ones) whose params.yaml params, flattened to dotted keys, equal the workspace's (the
``workspace`` row of the same output, that is the current params.yaml) in everything but
``seed``. Params are compared as the code reads them (:func:`semipkd.config.parse_params`, so a
key one file omits and another sets to its default is the same setting, as when a params file
predates a new key); a file the current code refuses is compared as written. Experiments of
every baseline commit count (``-A``), so a study whose seeds ran on different commits is
collected whole. From each it reads ``reports/evaluate/<benchmark>.json`` as DVC recorded it.

With ``--upper-bound OTHER`` (a setting already in the output, collected the same way) the
setting is label-scarce and OTHER is its upper bound: the same params except the labelled subset
(:data:`SUBSET_KEYS`), so OTHER's labelled-only student learned from every label. Per protocol and
metric, paired by seed, it writes the upper bound's gain ``gain = OTHER's labelled_only - this
labelled_only``, what pseudo-labels recovered ``recovered = semi_pkd - labelled_only`` and the
share ``recovered / gain`` (per seed, and as the ratio of the two means, which a seed with a tiny
gain cannot blow up). The ratio is direction-free: for KLD both differences are negative when
things improve. Gain and recovered are paired differences with the test below and a verdict
(the gains are one comparison, the recovered differences another), the share none (a ratio of means says nothing about its
spread). The bound is recomputed whenever either setting is collected again.

With ``--variant-of BASE`` (a setting already in the output) the setting is BASE with some params
changed (any: they are listed under ``differs``), e.g. ``-S student.decoder_act=swish``. Per arm
(:data:`VARIANT_ARMS`), protocol and metric, paired by seed, it writes this minus BASE with a
verdict, and under ``gap`` this setting's paired difference (semi_pkd - labelled_only) minus
BASE's, paired by seed: whether the change moves Semi-PKD's edge over labels alone beyond the
spread. It is recomputed whenever either setting is collected again.

It refuses (exit status 2, naming what is wrong) when two experiments of the setting share a
seed with different metrics, when fewer than 2 seeds are found, when fewer than 2 seeds have
both students, or when an experiment of the setting lacks the metrics file.

Per arm (``semi_pkd`` = ``student``, ``labelled_only`` = ``student_no_pseudo``, ``teacher``,
``center_bias``), protocol and metric it writes the values by seed, their mean and sample std
(ddof=1). The paired differences semi_pkd minus labelled_only, paired by seed (only seeds that
both arms have), get the same summary plus a two-sided paired t-test (:func:`paired_stats`, the
one function every paired difference of the file goes through: ``ci95`` the 95% confidence
interval of the mean, ``t``, ``df``, ``p``, ``test`` its name) and a verdict (:func:`judge`).
The rule (:data:`semipkd.report.CLAIM_RULE`, quoted in the file): the primary comparisons, named
before looking, are CC and KLD under the benchmark protocol; a primary verdict names the better
arm only when the 95% CI excludes 0. Every other metric and protocol is secondary: its p-values
are Holm-adjusted (``p_holm``) across the secondary metrics of the same comparison (the paired
block, one variant arm, the gap, the upper bound's gain) and protocol, and its verdict names the
better arm only when ``p_holm`` < 0.05. Better is in the metric's direction (KLD: lower; every
other metric: higher); otherwise ``within spread``. With every difference equal (std 0) the CI
is the point mean and the verdict follows its sign; with fewer than 2 pairs, ``too few pairs``.

``--recompute`` collects nothing: it summarises every setting of ``--out`` again from the
per-seed values the file stores (each arm's ``values`` and ``seeds``) with the current rule
(arms, paired, variant and upper-bound blocks) and writes it back. It is how a change of rule
reaches settings whose experiments are gone:

    python benchmarks/claim.py --recompute        # rewrites reports/real/claim.json

The setting is merged into ``settings[NAME]`` of the output (other settings kept, each one's
params differences from the others recomputed), written atomically; the ``report`` stage renders
it into reports/tables.md and reports/figures/claim.png.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semipkd.config import ConfigError, as_plain, parse_params  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.errors import SemipkdError  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.io import atomic_write_json  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.names import CENTER_BIAS, METRIC_NAMES, STUDENT, STUDENT_NO_PSEUDO, TEACHER  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.report import (  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
    CLAIM_FILE,
    CLAIM_PRIMARY_METRICS,
    CLAIM_PRIMARY_PROTOCOL,
    CLAIM_RULE,
    format_paired,
)
from semipkd.stats import ALPHA, holm, mean_ci, paired_test  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)

#: Arm name in claim.json -> model key of reports/evaluate/<benchmark>.json.
ARMS = {"semi_pkd": STUDENT, "labelled_only": STUDENT_NO_PSEUDO, "teacher": TEACHER, "center_bias": CENTER_BIAS}
#: The paired difference is PAIR[0] minus PAIR[1].
PAIR = ("semi_pkd", "labelled_only")
#: Metrics where a lower value is better; every other metric of semipkd.metrics is higher-better.
LOWER_IS_BETTER = frozenset({"kld"})
#: The param that varies within a setting.
SEED = "seed"
PARAMS_FILE = "params.yaml"
#: Executor states of finished experiments; an experiment run in the workspace has no executor.
DONE = "success"
ABSENT = "(absent)"
#: The keys a label-scarce setting may differ in from the setting that is its upper bound (the same
#: recipe with every labelled image's labels); ``data.labelled_subset`` must differ.
SUBSET_KEYS = ("data.labelled_subset", "data.subset_seed", "data.withheld_to_pool")
#: The upper bound's arm: the student trained on all labels, no pseudo-labels.
UPPER_ARM = "labelled_only"
#: The arms a variant is compared on with the setting it varies (``--variant-of``).
VARIANT_ARMS = ("semi_pkd", "labelled_only", "teacher")


class ClaimError(SemipkdError, ValueError):
    """The experiments cannot make a seeded study: the message names the experiments and why."""


# --------------------------------------------------------------------------------------------
# Reading `dvc exp show --json`


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys (``{"distill": {"lr": 1}}`` -> ``{"distill.lr": 1}``); lists
    and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def resolved(params: Mapping[str, Any]) -> dict[str, Any]:
    """Flattened params as the code reads them (defaults filled in, values normalised), or as
    written when the current code refuses them."""
    try:
        full = as_plain(parse_params(params))
    except ConfigError:
        return flatten(params)
    return flatten(full)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def reresolved(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A setting's stored params (flat, seed left out) as the current code reads them: a setting
    collected before a key was added compares equal to one that has the key at its default."""
    full = resolved({**unflatten(flat), SEED: 0})
    full.pop(SEED, None)
    return full


def run_exp_show(cwd: Path | None = None) -> list[dict]:
    """The output of ``dvc exp show --json -A`` run in ``cwd`` (the current folder by default)."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", "-A"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClaimError(f"`dvc exp show --json` failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def _params_of(state: Mapping[str, Any]) -> dict[str, Any] | None:
    data = state.get("data") or {}
    entry = (data.get("params") or {}).get(PARAMS_FILE) or {}
    return entry.get("data") if isinstance(entry.get("data"), Mapping) else None


def workspace_params(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Flattened params.yaml of the ``workspace`` row: the setting being collected."""
    for row in rows:
        if row.get("rev") == "workspace":
            params = _params_of(row)
            if params is None:
                raise ClaimError(f"dvc exp show: the workspace row has no {PARAMS_FILE} params")
            flat = resolved(params)
            if SEED not in flat:
                raise ClaimError(f"{PARAMS_FILE} has no {SEED!r}; a seeded study varies it")
            return flat
    raise ClaimError("dvc exp show: no workspace row (run it without --rev/-n options)")


def iter_experiments(rows: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every experiment under every baseline row: name, rev, executor state, params, metrics.

    ``state`` is the executor's (``success``, ``queued``, ``running``, ``failed``); an
    experiment run in the workspace (``dvc exp run`` without ``--queue``) has no executor and
    counts as ``success``. ``params`` is None where DVC could not read them.
    """
    for row in rows:
        if row.get("rev") == "workspace":
            continue
        for exp_range in row.get("experiments") or []:
            executor = exp_range.get("executor") or {}
            for state in exp_range.get("revs") or []:
                params = _params_of(state)
                yield {
                    "name": state.get("name") or exp_range.get("name") or state["rev"][:7],
                    "rev": state["rev"],
                    "baseline": row.get("rev"),
                    "state": executor.get("state", DONE),
                    "error": (state.get("error") or {}).get("msg"),
                    "params": None if params is None else resolved(params),
                    "metrics": (state.get("data") or {}).get("metrics") or {},
                }


def params_diff(a: Mapping[str, Any], b: Mapping[str, Any], ignore: Sequence[str] = (SEED,)) -> dict[str, list]:
    """``{key: [a's value, b's value]}`` for every dotted key whose values differ (``(absent)``
    where a side lacks the key), ``ignore`` left out."""
    keys = sorted((set(a) | set(b)) - set(ignore))
    return {k: [a.get(k, ABSENT), b.get(k, ABSENT)] for k in keys if a.get(k, ABSENT) != b.get(k, ABSENT)}


def select_setting(rows: Sequence[Mapping[str, Any]], benchmark: str) -> tuple[dict[str, Any], list[dict], list[str]]:
    """The workspace's setting and its experiments, one per seed, ordered by seed.

    Returns ``(params without seed, runs, notes)``; a run is ``{"seed", "name", "rev",
    "scores"}`` (scores: the benchmark's ``{model: {protocol: {metric: value}}}``); notes say
    which experiments were left out and why. Raises :class:`ClaimError` on the refusals listed
    in the module docstring.
    """
    setting = workspace_params(rows)
    metrics_file = f"reports/evaluate/{benchmark}.json"
    by_seed: dict[Any, list[dict]] = {}
    notes: list[str] = []
    others = 0
    for exp in iter_experiments(rows):
        label = f"{exp['name']} ({exp['rev'][:7]})"
        if exp["params"] is None:
            notes.append(f"{label}: DVC could not read its {PARAMS_FILE} ({exp['error'] or 'no params'}); left out")
            continue
        if params_diff(exp["params"], setting):
            others += 1  # another setting
            continue
        if exp["state"] != DONE:
            notes.append(f"{label}: {exp['state']}; left out")
            continue
        if SEED not in exp["params"]:
            raise ClaimError(f"experiment {label} has the setting's params but no {SEED!r}")
        entry = exp["metrics"].get(metrics_file) or {}
        if not isinstance(entry.get("data"), Mapping):
            why = (entry.get("error") or {}).get("msg") if entry else "not among its metrics"
            raise ClaimError(f"experiment {label} of this setting lacks {metrics_file} ({why}); "
                             f"rerun it or remove it (`dvc exp remove {exp['name']}`)")
        by_seed.setdefault(exp["params"][SEED], []).append({
            "seed": exp["params"][SEED], "name": exp["name"], "rev": exp["rev"], "scores": entry["data"]})
    if others:
        notes.append(f"{others} experiment(s) of other settings (params besides {SEED} differ) left out")
    runs = []
    for seed in sorted(by_seed, key=lambda s: (str(type(s)), s)):
        same = by_seed[seed]
        first = same[0]
        for other in same[1:]:
            if other["scores"] != first["scores"]:
                raise ClaimError(
                    f"experiments {first['name']} ({first['rev'][:7]}) and {other['name']} ({other['rev'][:7]}) "
                    f"both ran {SEED}={seed} in this setting with different {metrics_file}; keep one "
                    f"(`dvc exp remove NAME`)")
            notes.append(f"{other['name']} ({other['rev'][:7]}): the same {SEED} and metrics as {first['name']}; counted once")
        runs.append(first)
    if len(runs) < 2:
        found = ", ".join(f"{r['name']} ({SEED}={r['seed']})" for r in runs) or "none"
        raise ClaimError(
            f"fewer than 2 seeds of this setting in dvc exp show (found: {found}); run "
            f"`dvc exp run --queue -S '{SEED}=1,2,3'` and `dvc queue start` with this params.yaml"
            + ("".join(f"\n  {n}" for n in notes) if notes else ""))
    return {k: v for k, v in setting.items() if k != SEED}, runs, notes


# --------------------------------------------------------------------------------------------
# Statistics


def describe(values: Sequence[float], seeds: Sequence[Any]) -> dict[str, Any]:
    """``{"mean", "std" (sample, ddof=1; None for n < 2), "n", "values", "seeds", "ci95"}``;
    ``ci95``: the 95% t-interval of the mean (:func:`semipkd.stats.mean_ci`; None for n < 2),
    which claim.png draws as each arm's error bar."""
    arr = np.asarray(values, dtype=np.float64)
    ci = mean_ci(arr)
    return {
        "mean": float(arr.mean()) if arr.size else None,
        "std": float(arr.std(ddof=1)) if arr.size >= 2 else None,
        "n": int(arr.size),
        "values": [float(v) for v in arr],
        "seeds": list(seeds),
        "ci95": None if ci is None else [float(ci[0]), float(ci[1])],
    }


def _value(scores: Mapping, model: str, protocol: str, metric: str) -> float | None:
    v = scores.get(model, {}).get(protocol, {}).get(metric)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def direction(metric: str) -> str | None:
    """``"lower"`` or ``"higher"`` (which way is better), None for a metric this file does not know."""
    if metric in LOWER_IS_BETTER:
        return "lower"
    return "higher" if metric in METRIC_NAMES else None


def paired_stats(values: Sequence[float], seeds: Sequence[Any], metric: str) -> dict[str, Any]:
    """The one summary of a paired difference (per-seed ``values`` = first minus second), used by
    the paired, variant, gap and upper-bound blocks: :func:`describe` plus the paired t-test of
    :func:`semipkd.stats.paired_test` (``ci95``, ``t``, ``df``, ``p``, ``test``) and ``better``
    (the metric's direction). The verdict comes from :func:`judge`, which sees the whole family."""
    return {**describe(values, seeds), **paired_test(values), "better": direction(metric)}


def verdict(stats: Mapping[str, Any], labels: tuple[str, str] = (f"{PAIR[0]} better", f"{PAIR[1]} better")) -> str:
    """The rule of :data:`semipkd.report.CLAIM_RULE` applied to one judged paired difference
    (:func:`paired_stats` with ``primary`` and, for a secondary, ``p_holm``); ``labels``: what to
    say when the first or the second side wins."""
    if stats["p"] is None:
        return "too few pairs"
    if stats["primary"]:
        low, high = stats["ci95"]
        significant = low > 0 or high < 0
    else:
        significant = stats["p_holm"] < ALPHA
    if not significant:
        return "within spread"
    if stats["better"] is None:
        return "differs, direction unknown"
    mean = stats["mean"]
    first_wins = mean > 0 if stats["better"] == "higher" else mean < 0
    return labels[0] if first_wins else labels[1]


def judge(tree: dict[str, dict[str, dict]], labels: tuple[str, str]) -> dict[str, dict[str, dict]]:
    """Mark each paired difference of one comparison (``{protocol: {metric: paired_stats}}``)
    primary or secondary, Holm-adjust the secondaries' p-values per protocol (``p_holm``; None
    for a primary) and set every ``verdict``; returns ``tree``, changed in place."""
    for proto, per in tree.items():
        for m, st in per.items():
            st["primary"] = proto == CLAIM_PRIMARY_PROTOCOL and m in CLAIM_PRIMARY_METRICS
            st["p_holm"] = None
        family = [m for m, st in per.items() if not st["primary"] and st["p"] is not None]
        for m, adjusted in zip(family, holm([per[m]["p"] for m in family]), strict=True):
            per[m]["p_holm"] = adjusted
        for st in per.values():
            st["verdict"] = verdict(st, labels)
    return tree


def summarise(runs: Sequence[Mapping[str, Any]]) -> tuple[dict, dict]:
    """``(arms, paired)``: per arm, protocol and metric the stats of :func:`describe`; per protocol
    and metric the paired differences ``semi_pkd - labelled_only`` (:func:`paired_tree`). Raises
    :class:`ClaimError` when fewer than 2 seeds have both students."""
    arms: dict[str, dict] = {}
    for arm, model in ARMS.items():
        protocols = sorted({p for r in runs for p in r["scores"].get(model, {})})
        per_arm = {}
        for proto in protocols:
            metrics = sorted({m for r in runs for m in r["scores"].get(model, {}).get(proto, {})})
            per_proto = {}
            for m in metrics:
                got = [(r["seed"], _value(r["scores"], model, proto, m)) for r in runs]
                got = [(s, v) for s, v in got if v is not None]
                per_proto[m] = describe([v for _, v in got], [s for s, _ in got])
            per_arm[proto] = per_proto
        if per_arm:
            arms[arm] = per_arm
    a, b = (ARMS[k] for k in PAIR)
    both = [r["seed"] for r in runs if a in r["scores"] and b in r["scores"]]
    if len(both) < 2:
        raise ClaimError(f"fewer than 2 seeds have both {a} and {b} in their metrics (seeds with both: {both}); "
                         "no paired difference can be made")
    return arms, paired_of(arms)


def paired_of(arms: Mapping[str, Mapping]) -> dict[str, dict]:
    """A setting's ``paired`` block from its ``arms``: semi_pkd - labelled_only, paired by seed."""
    return paired_tree(arms.get(PAIR[0], {}), arms.get(PAIR[1], {}), (f"{PAIR[0]} better", f"{PAIR[1]} better"))


def _by_seed(stats: Mapping[str, Any]) -> dict[Any, float]:
    return dict(zip(stats["seeds"], stats["values"], strict=True))


def _shown(diff: Mapping[str, list]) -> str:
    """``key this (there that)`` for each differing param of a :func:`params_diff`."""
    return ", ".join(f"{k} {json.dumps(v[0])} (there {json.dumps(v[1])})" for k, v in sorted(diff.items()))


def upper_bound(entry: Mapping[str, Any], bound: Mapping[str, Any], bound_name: str,
                diff: Mapping[str, list]) -> dict[str, Any]:
    """The share of the upper bound's gain that ``entry`` (a label-scarce setting) recovers; see
    the module docstring. ``diff``: the params that differ between the two (:func:`params_diff`).
    Raises :class:`ClaimError` when ``bound`` is not the same recipe with another labelled subset."""
    if "data.labelled_subset" not in diff:
        raise ClaimError(f"setting {bound_name!r} has the same data.labelled_subset as this one; an upper bound "
                         "learns from more labels")
    extra = {k: v for k, v in diff.items() if k not in SUBSET_KEYS}
    if extra:
        raise ClaimError(f"setting {bound_name!r} differs from this one in more than the labelled subset: {_shown(extra)}; "
                         "an upper bound is the same recipe with every label")
    metrics: dict[str, dict] = {}
    gains: dict[str, dict] = {}
    recs: dict[str, dict] = {}
    for proto, per in entry["paired"].items():
        for m in per:
            up = bound["arms"].get(UPPER_ARM, {}).get(proto, {}).get(m)
            lo = entry["arms"][PAIR[1]][proto][m]
            semi = entry["arms"][PAIR[0]][proto][m]
            if up is None:
                continue
            upv, lov, sv = (_by_seed(s) for s in (up, lo, semi))
            seeds = [s for s in lo["seeds"] if s in upv and s in sv]
            gain = [upv[s] - lov[s] for s in seeds]
            rec = [sv[s] - lov[s] for s in seeds]
            share_seeds = [s for s, g in zip(seeds, gain, strict=True) if g != 0]
            shares = [r / g for r, g in zip(rec, gain, strict=True) if g != 0]
            gains.setdefault(proto, {})[m] = paired_stats(gain, seeds, m)
            recs.setdefault(proto, {})[m] = paired_stats(rec, seeds, m)
            mean_gain = float(np.mean(gain)) if gain else 0.0
            metrics.setdefault(proto, {})[m] = {
                "upper": describe([upv[s] for s in seeds], seeds),
                "gain": gains[proto][m],
                "recovered": recs[proto][m],
                "share": describe(shares, share_seeds),
                "share_of_means": float(np.mean(rec)) / mean_gain if mean_gain != 0 else None,
            }
    if not metrics:
        raise ClaimError(f"setting {bound_name!r} has no {UPPER_ARM} scores on the protocols and metrics of this one")
    judge(gains, ("more labels better", "more labels worse"))  # the gains are one comparison,
    judge(recs, (f"{PAIR[0]} better", f"{PAIR[1]} better"))  # what was recovered another
    return {"setting": bound_name, "arm": UPPER_ARM, "differs": dict(diff), "metrics": metrics}


def _paired(ours: Mapping[str, Any], theirs: Mapping[str, Any], metric: str) -> dict[str, Any] | None:
    """``ours - theirs`` paired by seed (:func:`paired_stats`, not yet judged); None under 2
    shared seeds."""
    b = _by_seed(theirs)
    pairs = [(s, v - b[s]) for s, v in zip(ours["seeds"], ours["values"], strict=True) if s in b]
    if len(pairs) < 2:
        return None
    return paired_stats([d for _, d in pairs], [s for s, _ in pairs], metric)


def paired_tree(ours: Mapping[str, Mapping], theirs: Mapping[str, Mapping],
                labels: tuple[str, str]) -> dict[str, dict]:
    """:func:`_paired` for every protocol and metric of ``ours`` ({protocol: {metric: stats}})
    that ``theirs`` has too, where at least 2 seeds pair up; the whole tree is one comparison,
    judged by :func:`judge` with ``labels``."""
    out: dict[str, dict] = {}
    for proto, per in sorted(ours.items()):
        for m, stats in sorted(per.items()):
            other = theirs.get(proto, {}).get(m)
            got = _paired(stats, other, m) if other else None
            if got:
                out.setdefault(proto, {})[m] = got
    return judge(out, labels)


def variant_of(entry: Mapping[str, Any], base: Mapping[str, Any], base_name: str,
               diff: Mapping[str, list], name: str) -> dict[str, Any]:
    """Setting ``name`` (``entry``) against ``base``, the setting it varies; see the module
    docstring. Raises :class:`ClaimError` when the two have the same params or share fewer than 2
    seeds on every arm, protocol and metric."""
    if not diff:
        raise ClaimError(f"setting {base_name!r} has the same params as this one (seed aside); a variant "
                         "changes at least one")
    labels = (f"{name} better", f"{base_name} better")
    arms = {arm: tree for arm in VARIANT_ARMS
            if (tree := paired_tree(entry["arms"].get(arm, {}), base["arms"].get(arm, {}), labels))}
    if not arms:
        raise ClaimError(f"setting {base_name!r} shares fewer than 2 seeds with this one on every arm, protocol "
                         "and metric; a variant is compared paired by seed")
    edge = (f"Semi-PKD's edge larger in {name}", f"Semi-PKD's edge larger in {base_name}")
    gap = paired_tree(entry["paired"], base["paired"], edge)
    return {"setting": base_name, "differs": dict(diff), "arms": arms, "gap": gap}


#: A setting's relations to another setting of the file: key -> (what the other is called in
#: messages, the function computing it from (entry, other, other's name, params diff, name)).
RELATIONS = {
    "upper_bound": ("upper bound", lambda e, o, on, d, n: upper_bound(e, o, on, d)),
    "variant_of": ("base setting (--variant-of)", variant_of),
}


# --------------------------------------------------------------------------------------------
# Output


def _read_claim(path: Path) -> dict[str, Any]:
    """The claim file at ``path`` ({} when there is none); raises on one that is not a claim file."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ClaimError(f"{path}: cannot read the existing claim file ({e}); move it aside") from e
    if not isinstance(old.get("settings"), Mapping):
        raise ClaimError(f"{path}: not a claim file (no 'settings' object); move it aside")
    return old


def _write_claim(path: Path, settings: dict[str, dict]) -> dict[str, Any]:
    """Recompute every setting's ``differs_from`` and relations (:data:`RELATIONS`), write the
    file atomically with the current :data:`CLAIM_RULE`; returns the whole file."""
    now = {s: reresolved(e["params"]) for s, e in settings.items()}
    for s, e in settings.items():
        e["differs_from"] = {o: params_diff(now[s], now[o]) for o in sorted(settings) if o != s}
        for key, (called, compute) in RELATIONS.items():
            if not e.get(key):
                continue
            other = e[key]["setting"]
            if other == s or other not in settings:
                raise ClaimError(f"{path}: setting {s!r} names {other!r} as its {called}, which is not another "
                                 f"setting of the file (collect it first: benchmarks/claim.py --setting {other})")
            try:
                e[key] = compute(e, settings[other], other, e["differs_from"][other], s)
            except ClaimError as exc:
                raise ClaimError(f"setting {s!r}: {exc}") from exc
    claim = {
        "source": "benchmarks/claim.py",
        "rule": CLAIM_RULE,
        "arms": dict(ARMS),
        "paired": f"{PAIR[0]} - {PAIR[1]}, paired by seed",
        "settings": dict(sorted(settings.items())),
    }
    atomic_write_json(path, claim)
    return claim


def merge(path: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Put ``entry`` under ``settings[name]`` of the claim file at ``path`` (other settings kept),
    recompute every setting's ``differs_from`` and relations, write atomically; returns the whole
    file."""
    settings = dict(_read_claim(path).get("settings", {}))
    if not entry.get("description") and name in settings:
        entry["description"] = settings[name].get("description", "")
    for key in RELATIONS:
        if key not in entry and settings.get(name, {}).get(key):
            entry[key] = {"setting": settings[name][key]["setting"]}  # kept, recomputed below
    settings[name] = entry
    return _write_claim(path, settings)


def recompute(path: Path) -> dict[str, Any]:
    """Every setting of the claim file at ``path`` summarised again from the per-seed values it
    stores (``arms``: values and seeds), with the current rule: each arm's stats, the paired
    block, the upper-bound and variant blocks. For a file whose experiments are gone (the clone
    that ran them) or one written under an older rule; writes it back atomically."""
    old = _read_claim(path)
    if not old:
        raise ClaimError(f"{path}: no claim file to recompute")
    settings = {}
    for name, e in old["settings"].items():
        arms = {arm: {proto: {m: describe(st["values"], st["seeds"]) for m, st in sorted(per.items())}
                      for proto, per in sorted(tree.items())}
                for arm, tree in e["arms"].items()}
        settings[name] = {**e, "arms": arms, "paired": paired_of(arms)}
    return _write_claim(path, settings)


def _pm(stats: Mapping[str, Any] | None) -> str:
    """``mean ± std (n)`` of an arm's values."""
    if not stats or stats["mean"] is None:
        return "–"
    std = "–" if stats["std"] is None else f"{stats['std']:.4f}"
    return f"{stats['mean']:.4f} ± {std} ({stats['n']})"


def upper_table(entry: Mapping[str, Any]) -> list[str]:
    """Text lines for the upper-bound block of a setting (none without one)."""
    ub = entry.get("upper_bound")
    if not ub:
        return []
    lines = [f"  upper bound: setting {ub['setting']!r}, its {ub['arm']} student"]
    for proto, per in ub["metrics"].items():
        for m, u in per.items():
            som = "–" if u["share_of_means"] is None else f"{u['share_of_means']:+.2f}"
            lines.append(f"    {proto:<16} {m:<9} gain {format_paired(u['gain'])} ({u['gain']['verdict']}), "
                         f"recovered {format_paired(u['recovered'])}, share of means {som}")
    return lines


def variant_table(entry: Mapping[str, Any]) -> list[str]:
    """Text lines for the variant block of a setting (none without one)."""
    var = entry.get("variant_of")
    if not var:
        return []
    lines = [f"  variant of setting {var['setting']!r}: {_shown(var['differs'])}; this minus that, paired by seed"]
    for arm, per_arm in list(var["arms"].items()) + [("gap", var["gap"])]:
        for proto, per in per_arm.items():
            for m, d in per.items():
                lines.append(f"    {arm:<14} {proto:<16} {m:<9} {format_paired(d)}  {d['verdict']}")
    return lines


def table(name: str, entry: Mapping[str, Any]) -> str:
    """A compact text table of one collected setting (printed by :func:`main`)."""
    lines = [f"setting {name}: {entry['benchmark']}, seeds {entry['seeds']}, "
             f"experiments {', '.join(e['name'] for e in entry['experiments'])}"]
    for proto, per in entry["paired"].items():
        lines.append(f"  {proto}")
        lines.append(f"    {'metric':<10} {PAIR[0]:>22} {PAIR[1]:>22} {'paired diff [95% CI] p':>48}  verdict")
        for m, d in per.items():
            a = entry["arms"][PAIR[0]][proto].get(m)
            b = entry["arms"][PAIR[1]][proto].get(m)
            lines.append(f"    {m:<10} {_pm(a):>22} {_pm(b):>22} {format_paired(d):>48}  {d['verdict']}")
    return "\n".join(lines + upper_table(entry) + variant_table(entry))


def collect(rows: Sequence[Mapping[str, Any]], name: str, benchmark: str, description: str, out: Path,
            upper: str | None = None, base: str | None = None) -> dict[str, Any]:
    """Select the workspace's setting in ``rows``, summarise it and merge it into ``out`` (with
    ``upper``: the setting of ``out`` that is its upper bound; ``base``: the setting of ``out``
    it is a variant of); returns the setting's entry (notes about left-out experiments under
    ``notes``)."""
    params, runs, notes = select_setting(rows, benchmark)
    arms, paired = summarise(runs)
    entry = {
        "benchmark": benchmark,
        "description": description,
        "params": params,
        "seeds": [r["seed"] for r in runs],
        "experiments": [{"name": r["name"], "rev": r["rev"], "seed": r["seed"]} for r in runs],
        "notes": notes,
        "arms": arms,
        "paired": paired,
        **({"upper_bound": {"setting": upper}} if upper else {}),
        **({"variant_of": {"setting": base}} if base else {}),
    }
    claim = merge(out, name, entry)
    for other, e in claim["settings"].items():
        if other != name and not e["differs_from"].get(name):
            print(f"note: setting {other!r} has the same params as {name!r} (seed aside)", file=sys.stderr)
    return claim["settings"][name]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", default=None, help="name of the setting (the workspace params.yaml) in claim.json")
    ap.add_argument("--benchmark", default="osie", help="reads reports/evaluate/<benchmark>.json of each experiment")
    ap.add_argument("--description", default="", help="what the setting is (kept from the file when omitted)")
    ap.add_argument("--exp-show", default=None, help="read this `dvc exp show --json` output instead of running it")
    ap.add_argument("--upper-bound", default=None, metavar="SETTING",
                    help="a setting of the output that is this label-scarce setting's upper bound (all labels)")
    ap.add_argument("--variant-of", default=None, metavar="SETTING",
                    help="a setting of the output that this one varies (some params changed): each arm compared, "
                         "paired by seed")
    ap.add_argument("--recompute", action="store_true",
                    help="collect nothing: recompute every setting of --out from the per-seed values it stores, "
                         "with the current rule")
    ap.add_argument("--out", default=str(ROOT / CLAIM_FILE))
    args = ap.parse_args(argv)
    if args.recompute == (args.setting is not None):
        ap.error("give either --setting NAME (collect) or --recompute")
    if args.recompute and (args.exp_show or args.upper_bound or args.variant_of or args.description):
        ap.error("--recompute reads only --out; the other options are for collecting a setting")
    try:
        if args.recompute:
            claim = recompute(Path(args.out))
            for name, entry in claim["settings"].items():
                print(table(name, entry))
            print(f"{args.out}: {len(claim['settings'])} settings recomputed")
            return 0
        if args.exp_show:
            try:
                rows = json.loads(Path(args.exp_show).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ClaimError(f"{args.exp_show}: cannot read dvc exp show JSON ({e})") from e
        else:
            rows = run_exp_show()
        if not isinstance(rows, list):
            raise ClaimError("dvc exp show --json: expected a list of rows (DVC 3)")
        entry = collect(rows, args.setting, args.benchmark, args.description, Path(args.out), args.upper_bound,
                        args.variant_of)
    except SemipkdError as exc:
        print(f"error: claim: {exc}", file=sys.stderr)
        return 2
    print(table(args.setting, entry))
    for note in entry["notes"]:
        print(f"  note: {note}")
    print(f"{args.out}: settings[{args.setting!r}] written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
