"""benchmarks/claim.py collects a seeded study from `dvc exp show --json`; the report renders it.

The fixture tests/data/exp_show_seed_grid.json is real DVC 3.67 output (tests/data/README.md says
how it was made): a 3-seed grid of one setting (taped-soke, bland-rugs, liege-bunk: seeds 1, 2,
3), an experiment of another setting (epochs3: seed 1, distill.epochs 3), one still queued, one
finished after a params change (queued1) and one failed. Expected numbers are computed here with
:mod:`statistics`, not with the collector's code.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import statistics
import sys

import matplotlib.image as mpimg
import pytest

from pipeline_copy import REPO
from semipkd import report

FIXTURE = REPO / "tests/data/exp_show_seed_grid.json"
METRICS_FILE = "reports/evaluate/osie.json"
#: The setting's experiments in the fixture, by seed.
GRID = {1: "taped-soke", 2: "bland-rugs", 3: "liege-bunk"}


def _load(name: str, path: str):
    """Import a script as its own run would: its folder first on sys.path (stages/_checkout)."""
    folder = str((REPO / path).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, REPO / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


claim = _load("claim", "benchmarks/claim.py")

#: Tabulated t quantiles t_{0.975, df} (any t table), so the tests do not call scipy as the code does.
T975 = {1: 12.706204736174707, 2: 4.302652729911275}


def _hand_test(d):
    """mean, std, t, two-sided p and 95% CI of the paired differences ``d`` (n = 2 or 3) by hand:
    the t distribution with 1 or 2 dof has a closed-form CDF (1 dof: Cauchy, p = 1 - 2/pi atan|t|;
    2 dof: p = 1 - |t| / sqrt(2 + t^2))."""
    n = len(d)
    mean, std = statistics.fmean(d), statistics.stdev(d)
    se = std / math.sqrt(n)
    t = mean / se
    p = 1 - 2 / math.pi * math.atan(abs(t)) if n == 2 else 1 - abs(t) / math.sqrt(2 + t * t)
    half = T975[n - 1] * se
    return mean, std, t, p, (mean - half, mean + half)


@pytest.fixture
def rows():
    return json.loads(FIXTURE.read_text())


def _exp(rows, name):
    """The fixture's experiment range called ``name`` (its revs[0] holds the data)."""
    for r in rows[1]["experiments"]:
        if r["name"] == name:
            return r
    raise KeyError(name)


def _scores(rows, name):
    return _exp(rows, name)["revs"][0]["data"]["metrics"][METRICS_FILE]["data"]


def _params(state):
    return state["data"]["params"]["params.yaml"]["data"]


def _add_copy(rows, of, name, seed, rev_char):
    """A copy of experiment ``of`` renamed ``name`` with ``seed`` (a fresh rev); returned."""
    new = copy.deepcopy(_exp(rows, of))
    new["name"] = new["revs"][0]["name"] = name
    new["revs"][0]["rev"] = new["revs"][0]["data"]["rev"] = rev_char * 40
    _params(new["revs"][0])["seed"] = seed
    rows[1]["experiments"].append(new)
    return new


def _run(tmp_path, rows, setting="grid", *extra):
    src = tmp_path / "exp_show.json"
    src.write_text(json.dumps(rows))
    out = tmp_path / "claim.json"
    rc = claim.main(["--setting", setting, "--exp-show", str(src), "--out", str(out), *extra])
    return rc, out


def test_fixture_is_real_dvc3_exp_show_output(rows):
    assert [r["rev"] for r in rows][0] == "workspace" and rows[1]["name"] == "master"
    states = {r["name"]: (r["executor"] or {}).get("state") for r in rows[1]["experiments"]}
    assert states == {"taped-soke": "success", "bland-rugs": "success", "liege-bunk": "success", "queued1": "success",
                      "epochs3": None, "stillqueued": "queued", "failing": "failed"}


def test_known_answers_from_the_fixture(tmp_path, rows, capsys):
    rc, out = _run(tmp_path, rows, "grid", "--description", "three seeds")
    assert rc == 0
    s = json.loads(out.read_text())["settings"]["grid"]
    assert s["seeds"] == [1, 2, 3]
    assert [(e["seed"], e["name"]) for e in s["experiments"]] == sorted(GRID.items())
    assert s["benchmark"] == "osie" and s["description"] == "three seeds"
    assert "seed" not in s["params"] and s["params"]["distill.epochs"] == 2
    for arm, model in {"semi_pkd": "student", "labelled_only": "student_no_pseudo", "teacher": "teacher",
                       "center_bias": "center_bias"}.items():
        for proto in ("benchmark", "model_resolution"):
            for m in ("auc_borji", "auc_judd", "cc", "info_gain", "kld", "nss", "sauc", "sim"):
                values = [_scores(rows, GRID[seed])[model][proto][m] for seed in (1, 2, 3)]
                got = s["arms"][arm][proto][m]
                assert got["values"] == values and got["seeds"] == [1, 2, 3] and got["n"] == 3
                assert got["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
                assert got["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
                half = T975[2] * statistics.stdev(values) / math.sqrt(3)  # claim.png's error bar
                low, high = got["ci95"]
                assert (high - low) / 2 == pytest.approx(half, rel=1e-9, abs=1e-15)
                assert (high + low) / 2 == pytest.approx(got["mean"], abs=1e-12)
    for proto in ("benchmark", "model_resolution"):
        for m in ("cc", "kld", "nss"):
            d = [_scores(rows, GRID[k])["student"][proto][m] - _scores(rows, GRID[k])["student_no_pseudo"][proto][m]
                 for k in (1, 2, 3)]
            got = s["paired"][proto][m]
            assert got["values"] == pytest.approx(d, abs=1e-12) and got["n"] == 3
            mean, std, t, p, ci = _hand_test(d)
            assert got["mean"] == pytest.approx(mean, abs=1e-12) and got["std"] == pytest.approx(std, abs=1e-12)
            assert got["t"] == pytest.approx(t, rel=1e-9) and got["p"] == pytest.approx(p, rel=1e-9)
            assert got["ci95"] == pytest.approx(ci, rel=1e-9) and got["df"] == 2 and "t-test" in got["test"]
            assert got["better"] == ("lower" if m == "kld" else "higher")
            primary = proto == "benchmark" and m in ("cc", "kld")
            assert got["primary"] is primary and (got["p_holm"] is None) is primary
            significant = (ci[0] > 0 or ci[1] < 0) if primary else got["p_holm"] < 0.05
            win = "semi_pkd" if (mean < 0 if m == "kld" else mean > 0) else "labelled_only"
            assert got["verdict"] == (f"{win} better" if significant else "within spread")
    printed = capsys.readouterr().out
    assert "setting grid" in printed and "stillqueued" in printed  # the queued one is named as left out


def _hand_rows(rows, numbers):
    """The fixture's three-seed grid with hand-written numbers: numbers[model][metric] = 3 values."""
    for i, seed in enumerate((1, 2, 3)):
        scores = _scores(rows, GRID[seed])
        for model, per in numbers.items():
            for m, vals in per.items():
                scores[model]["benchmark"][m] = vals[i]
    return rows


def test_verdicts_on_hand_written_numbers(tmp_path, rows):
    numbers = {
        "student": {"cc": [0.80, 0.82, 0.81], "kld": [0.50, 0.60, 0.55], "nss": [1.0, 1.0, 1.0], "sim": [0.5, 0.5, 0.5]},
        "student_no_pseudo": {"cc": [0.70, 0.71, 0.69], "kld": [0.90, 0.80, 0.85], "nss": [0.9, 1.1, 0.95],
                              "sim": [0.6, 0.7, 0.65]},
    }
    rc, out = _run(tmp_path, _hand_rows(rows, numbers))
    assert rc == 0
    p = json.loads(out.read_text())["settings"]["grid"]["paired"]["benchmark"]
    # cc (primary): d = .10, .11, .12 -> mean .11, std .01, t = .11 / (.01 / sqrt 3) = 19.05,
    # CI .11 ± 4.3027 * .01 / sqrt 3 = [.0852, .1348]: Semi-PKD better
    assert p["cc"]["mean"] == pytest.approx(0.11) and p["cc"]["std"] == pytest.approx(0.01)
    assert p["cc"]["t"] == pytest.approx(0.11 / (0.01 / math.sqrt(3)))
    assert p["cc"]["ci95"] == pytest.approx([0.11 - 4.302652729911275 * 0.01 / math.sqrt(3),
                                             0.11 + 4.302652729911275 * 0.01 / math.sqrt(3)])
    assert p["cc"]["verdict"] == "semi_pkd better" and p["cc"]["primary"] is True
    # kld (primary): d = -.4, -.2, -.3 -> mean -.3, std .1, CI [-.548, -.052]; lower is better
    assert p["kld"]["mean"] == pytest.approx(-0.3) and p["kld"]["std"] == pytest.approx(0.1)
    assert p["kld"]["ci95"] == pytest.approx([-0.3 - 0.2484138, -0.3 + 0.2484138], abs=1e-6)
    assert p["kld"]["verdict"] == "semi_pkd better" and p["kld"]["better"] == "lower"
    # nss (secondary): d = .1, -.1, .05 -> mean .0167, std .104: within spread
    assert p["nss"]["mean"] == pytest.approx(0.05 / 3) and p["nss"]["verdict"] == "within spread"
    # sim (secondary): d = -.1, -.2, -.15 -> t = -5.196, p = 1 - 5.196 / sqrt(29) = .0351 < .05, but
    # Holm over the 6 secondary metrics of the protocol multiplies it by at least 2: within spread
    assert p["sim"]["mean"] == pytest.approx(-0.15) and p["sim"]["std"] == pytest.approx(0.05)
    assert p["sim"]["p"] == pytest.approx(1 - math.sqrt(27) / math.sqrt(29))
    assert p["sim"]["p_holm"] >= 2 * p["sim"]["p"] and p["sim"]["verdict"] == "within spread"
    a = json.loads(out.read_text())["settings"]["grid"]["arms"]
    assert a["semi_pkd"]["benchmark"]["cc"]["mean"] == pytest.approx(0.81)
    assert a["labelled_only"]["benchmark"]["kld"]["std"] == pytest.approx(0.05)


def _judged(diffs_by_metric, protocol="benchmark", labels=("semi_pkd better", "labelled_only better")):
    tree = {protocol: {m: claim.paired_stats(d, list(range(1, len(d) + 1)), m) for m, d in diffs_by_metric.items()}}
    return claim.judge(tree, labels)[protocol]


def test_mean_beyond_std_but_ci_containing_zero_is_within_spread():
    """The old rule (|mean| > std) called d = .01, .03, .05 a win; its 95% CI is .03 ± 4.3027 *
    .02 / sqrt 3 = [-.0197, .0797], which contains 0."""
    d = [0.01, 0.03, 0.05]
    got = _judged({"cc": d})["cc"]
    mean, std, t, p, ci = _hand_test(d)
    assert abs(mean) > std and ci[0] < 0 < ci[1]
    assert got["ci95"] == pytest.approx(ci) and got["ci95"][0] == pytest.approx(-0.019683, abs=1e-6)
    assert got["t"] == pytest.approx(t) and got["p"] == pytest.approx(p) and p > 0.05
    assert got["verdict"] == "within spread"
    # two pairs: 1 dof, Cauchy p, t_{0.975,1} = 12.706
    two = _judged({"kld": [-0.5, -0.3]})["kld"]
    mean, std, t, p, ci = _hand_test([-0.5, -0.3])
    assert two["p"] == pytest.approx(p) and two["ci95"] == pytest.approx(ci) and two["df"] == 1
    assert two["verdict"] == "within spread"  # t = -8, p = .079


def test_equal_differences_and_too_few_pairs_are_decided_explicitly():
    """Every difference equal (std 0): the CI is the point mean, p = 0, the verdict follows the
    sign (1 and within spread when the mean is 0); one pair: no test."""
    same = _judged({"cc": [0.84 - 0.80, 0.75 - 0.71, 0.44 - 0.40], "kld": [0.2, 0.2, 0.2],
                    "nss": [0.0, 0.0, 0.0], "sim": [0.1, 0.2, 0.3]})
    assert same["cc"]["ci95"] == pytest.approx([0.04, 0.04]) and same["cc"]["t"] is None and same["cc"]["p"] == 0.0
    assert same["cc"]["verdict"] == "semi_pkd better" and "std 0" in same["cc"]["test"]
    assert same["kld"]["verdict"] == "labelled_only better"  # +0.2 KLD: worse
    assert same["nss"]["p"] == 1.0 and same["nss"]["ci95"] == [0.0, 0.0] and same["nss"]["verdict"] == "within spread"
    one = claim.judge({"benchmark": {"cc": claim.paired_stats([0.1], [1], "cc")}}, ("x", "y"))["benchmark"]["cc"]
    assert one["p"] is None and one["ci95"] is None and one["verdict"] == "too few pairs"


def test_secondary_metrics_are_holm_adjusted_per_protocol():
    """Primaries (CC, KLD under benchmark) keep their own p; the others of the protocol are one Holm
    family, and under model_resolution CC and KLD are secondary too."""
    diffs = {"cc": [0.01, 0.03, 0.05], "kld": [-0.4, -0.2, -0.3], "nss": [-0.1, -0.2, -0.15],
             "sim": [0.10, 0.11, 0.12], "sauc": [0.1, -0.1, 0.05]}
    got = _judged(diffs)
    hand = {m: _hand_test(d)[3] for m, d in diffs.items()}
    assert got["cc"]["p_holm"] is None and got["kld"]["p_holm"] is None
    # Holm by hand over (nss, sim, sauc): sorted sim .00274 * 3, nss .0351 * 2, sauc .81 * 1
    assert hand["sim"] < hand["nss"] < hand["sauc"]
    assert got["sim"]["p_holm"] == pytest.approx(3 * hand["sim"])
    assert got["nss"]["p_holm"] == pytest.approx(2 * hand["nss"])
    assert got["sauc"]["p_holm"] == pytest.approx(max(hand["sauc"], 2 * hand["nss"]))
    assert got["sim"]["verdict"] == "semi_pkd better" and got["nss"]["verdict"] == "within spread"
    assert got["kld"]["verdict"] == "semi_pkd better" and got["cc"]["verdict"] == "within spread"
    other = _judged(diffs, protocol="model_resolution")
    assert other["kld"]["p_holm"] is not None and not other["kld"]["primary"]


def test_recompute_rewrites_a_file_of_the_old_rule_from_its_stored_values(tmp_path, rows, capsys):
    """--recompute: a claim file written under the old rule (no t-test fields) is summarised
    again from its per-seed values, relations included, and loads in the report."""
    numbers = {"student": {"cc": [0.80, 0.82, 0.81]}, "student_no_pseudo": {"cc": [0.70, 0.71, 0.69]}}
    base = {"student": {"cc": [0.75, 0.76, 0.73]}, "student_no_pseudo": {"cc": [0.70, 0.71, 0.69]}}
    assert _run(tmp_path, _hand_rows(copy.deepcopy(rows), base), "relu")[0] == 0
    rc, out = _run(tmp_path, _variant_rows(rows, numbers, decoder_act="swish"), "swish", "--variant-of", "relu")
    assert rc == 0
    fresh = json.loads(out.read_text())
    old = copy.deepcopy(fresh)
    old["rule"] = "an arm is better when |mean d| > std d"
    for s in old["settings"].values():
        trees = [s["paired"]] + list(s.get("variant_of", {}).get("arms", {}).values()) + [s.get("variant_of", {}).get("gap", {})]
        for tree in trees:
            for per in tree.values():
                for st in per.values():
                    for k in ("ci95", "t", "df", "p", "test", "primary", "p_holm"):
                        del st[k]
                    st["verdict"] = "semi_pkd better"
    out.write_text(json.dumps(old))
    with pytest.raises(report.ClaimFormatError, match="--recompute"):
        report.load_claim(out)
    assert claim.main(["--recompute", "--out", str(out)]) == 0
    assert "2 settings recomputed" in capsys.readouterr().out
    assert json.loads(out.read_text()) == fresh
    report.load_claim(out)
    with pytest.raises(SystemExit):
        claim.main(["--recompute", "--setting", "x", "--out", str(out)])


def test_seeds_are_paired_only_where_both_arms_have_them(tmp_path, rows):
    del _scores(rows, GRID[2])["student_no_pseudo"]
    rc, out = _run(tmp_path, rows)
    assert rc == 0
    s = json.loads(out.read_text())["settings"]["grid"]
    assert s["arms"]["semi_pkd"]["benchmark"]["cc"]["seeds"] == [1, 2, 3]
    assert s["arms"]["labelled_only"]["benchmark"]["cc"]["seeds"] == [1, 3]
    d = s["paired"]["benchmark"]["cc"]
    assert d["seeds"] == [1, 3] and d["n"] == 2
    cc = {k: {m: _scores(rows, GRID[k])[m]["benchmark"]["cc"] for m in ("student", "student_no_pseudo")} for k in (1, 3)}
    expect = [cc[k]["student"] - cc[k]["student_no_pseudo"] for k in (1, 3)]
    assert d["values"] == pytest.approx(expect) and d["std"] == pytest.approx(statistics.stdev(expect))


def test_only_the_workspace_setting_is_taken(tmp_path, rows):
    # another non-seed param: left out even with a new seed
    other = _add_copy(rows, "liege-bunk", "bigger", 4, "a")
    _params(other["revs"][0])["prepare"]["benchmark_size"] = [192, 192]
    # the same setting, a new seed: taken
    _add_copy(rows, "liege-bunk", "seed4", 4, "b")
    _scores(rows, "seed4")["student"]["benchmark"]["cc"] = 0.123
    rc, out = _run(tmp_path, rows)
    s = json.loads(out.read_text())["settings"]["grid"]
    assert rc == 0 and s["seeds"] == [1, 2, 3, 4]
    assert [e["name"] for e in s["experiments"]] == ["taped-soke", "bland-rugs", "liege-bunk", "seed4"]
    assert s["arms"]["semi_pkd"]["benchmark"]["cc"]["values"][-1] == 0.123
    # the workspace at distill.epochs 3 is the other setting: epochs3 alone (queued1 too, seed 7)
    _params(rows[0])["distill"]["epochs"] = 3
    rc, out = _run(tmp_path, rows, "epochs3")
    s = json.loads(out.read_text())["settings"]["epochs3"]
    assert rc == 0 and [e["name"] for e in s["experiments"]] == ["epochs3", "queued1"]


def test_settings_compare_as_the_code_reads_them_across_commits(tmp_path, rows):
    """With semipkd's own params, a key one file omits and another sets to its default is one
    setting (a params file that predates the key), a non-default value is another; a seed run
    on another baseline commit (its own row of `dvc exp show -A`) is collected with the rest."""
    import yaml

    full = yaml.safe_load((REPO / "params.yaml").read_text())
    assert full["prepare"]["teacher_input_size"] is None  # the default the old files omit
    old = copy.deepcopy(full)
    del old["prepare"]["teacher_input_size"], old["prepare"]["teacher_output_size"]
    rows[0]["data"]["params"]["params.yaml"]["data"] = copy.deepcopy(full)
    for seed, name in GRID.items():
        _params(_exp(rows, name)["revs"][0]).clear()
        _params(_exp(rows, name)["revs"][0]).update(copy.deepcopy(old), seed=seed)
    other = _add_copy(rows, "liege-bunk", "teacher64", 4, "c")
    _params(other["revs"][0])["prepare"].update(teacher_input_size=[64, 64], teacher_output_size=[64, 64])
    # seed 3 ran on another commit: its own baseline row
    later = copy.deepcopy(rows[1])
    later["rev"] = "f" * 40
    later["experiments"] = [e for e in later["experiments"] if e["name"] == "liege-bunk"]
    rows[1]["experiments"] = [e for e in rows[1]["experiments"] if e["name"] != "liege-bunk"]
    rows.append(later)
    _, runs, notes = claim.select_setting(rows, "osie")
    assert [r["name"] for r in runs] == ["taped-soke", "bland-rugs", "liege-bunk"]
    assert [r["seed"] for r in runs] == [1, 2, 3]
    # the resolved params fill what the file omits, with the config's own values
    assert claim.resolved(old)["prepare.teacher_input_size"] is None
    assert claim.resolved(old)["train_teacher.ema_mix_mode"] == full["train_teacher"]["ema_mix_mode"]
    # control: compared as written, the old files would not be the workspace's setting
    assert claim.params_diff(claim.flatten(old), claim.flatten(full)) == {
        "prepare.teacher_input_size": ["(absent)", None], "prepare.teacher_output_size": ["(absent)", None]}


def test_queued_and_failed_experiments_of_the_setting_are_left_out(tmp_path, rows):
    failing = _exp(rows, "failing")["revs"][0]
    _params(failing).update(fail=False, distill={"epochs": 2, "lr": 0.001})  # now of the setting, still failed
    settings, runs, notes = claim.select_setting(rows, "osie")
    assert [r["name"] for r in runs] == ["taped-soke", "bland-rugs", "liege-bunk"]
    assert any("failing" in n and "failed" in n for n in notes) and any("stillqueued" in n and "queued" in n for n in notes)


def test_refusals(tmp_path, rows, capsys):
    # the same seed twice with different metrics
    dup = copy.deepcopy(rows)
    _add_copy(dup, "taped-soke", "again", 1, "c")
    _scores(dup, "again")["student"]["benchmark"]["cc"] += 0.01
    with pytest.raises(claim.ClaimError, match=r"taped-soke .* and again .* seed=1 .* different"):
        claim.select_setting(dup, "osie")
    assert _run(tmp_path, dup)[0] == 2
    assert "seed=1" in capsys.readouterr().err
    # the same seed twice with the same metrics: counted once
    same = copy.deepcopy(rows)
    _add_copy(same, "taped-soke", "rerun", 1, "d")
    _, runs, notes = claim.select_setting(same, "osie")
    assert [r["seed"] for r in runs] == [1, 2, 3] and any("rerun" in n and "counted once" in n for n in notes)
    # fewer than 2 seeds
    few = copy.deepcopy(rows)
    few[1]["experiments"] = [r for r in few[1]["experiments"] if r["name"] not in ("bland-rugs", "liege-bunk")]
    with pytest.raises(claim.ClaimError, match=r"fewer than 2 seeds .*taped-soke \(seed=1\)"):
        claim.select_setting(few, "osie")
    # an experiment of the setting without the metrics file
    lacking = copy.deepcopy(rows)
    _exp(lacking, "bland-rugs")["revs"][0]["data"]["metrics"] = {}
    with pytest.raises(claim.ClaimError, match=r"bland-rugs \(8234f09\) of this setting lacks reports/evaluate/osie.json"):
        claim.select_setting(lacking, "osie")
    with pytest.raises(claim.ClaimError, match="lacks reports/evaluate/mit1003.json"):
        claim.select_setting(rows, "mit1003")
    # fewer than 2 seeds with both students
    one = copy.deepcopy(rows)
    for seed in (1, 2):
        del _scores(one, GRID[seed])["student"]
    with pytest.raises(claim.ClaimError, match="fewer than 2 seeds have both student and student_no_pseudo"):
        claim.summarise(claim.select_setting(one, "osie")[1])
    assert not (tmp_path / "claim.json").exists()  # nothing written on a refusal


def test_merge_keeps_other_settings_and_says_how_they_differ(tmp_path, rows):
    rc, out = _run(tmp_path, rows, "base", "--description", "the first")
    assert rc == 0
    lr = copy.deepcopy(rows)
    for state in [lr[0]] + [_exp(lr, GRID[k])["revs"][0] for k in GRID]:
        _params(state)["distill"]["lr"] = 0.002
    assert _run(tmp_path, lr, "lr2")[0] == 0
    got = json.loads(out.read_text())
    assert sorted(got["settings"]) == ["base", "lr2"]
    assert got["settings"]["base"]["differs_from"] == {"lr2": {"distill.lr": [0.001, 0.002]}}
    assert got["settings"]["lr2"]["differs_from"] == {"base": {"distill.lr": [0.002, 0.001]}}
    assert got["rule"] == report.CLAIM_RULE and got["arms"]["semi_pkd"] == "student"
    # collected again without a description: the old one stays; the other setting is untouched
    before = got["settings"]["lr2"]
    assert _run(tmp_path, rows, "base")[0] == 0
    again = json.loads(out.read_text())
    assert again["settings"]["base"]["description"] == "the first" and again["settings"]["lr2"] == before


def _section_rows(rows, numbers, section, **params):
    """The three-seed grid with hand-written numbers and params.yaml's ``section`` set to
    ``params`` in the workspace and every experiment (another setting)."""
    out = _hand_rows(copy.deepcopy(rows), numbers)
    for state in [out[0]] + [_exp(out, GRID[k])["revs"][0] for k in GRID]:
        _params(state)[section] = dict(params)
    return out


def _subset_rows(rows, numbers, **data):
    """A label-scarce setting: ``data`` params set."""
    return _section_rows(rows, numbers, "data", **data)


def test_upper_bound_share_on_hand_written_numbers(tmp_path, rows, capsys):
    """--upper-bound: gain = upper's labelled-only - this labelled-only, recovered = Semi-PKD -
    labelled-only, share = recovered / gain, paired by seed; recomputed when the bound changes."""
    full = {"student_no_pseudo": {"cc": [0.80, 0.82, 0.81], "kld": [0.5, 0.6, 0.7]}}
    assert _run(tmp_path, _hand_rows(copy.deepcopy(rows), full), "full")[0] == 0
    scarce = {"student_no_pseudo": {"cc": [0.70, 0.71, 0.69], "kld": [0.9, 1.0, 1.1]},
              "student": {"cc": [0.75, 0.76, 0.73], "kld": [0.7, 0.8, 0.9]}}
    c100 = _subset_rows(rows, scarce, labelled_subset=100, withheld_to_pool=True)
    rc, out = _run(tmp_path, c100, "c100", "--upper-bound", "full")
    assert rc == 0
    ub = json.loads(out.read_text())["settings"]["c100"]["upper_bound"]
    assert ub["setting"] == "full" and ub["arm"] == "labelled_only"
    assert ub["differs"] == {"data.labelled_subset": [100, "(absent)"], "data.withheld_to_pool": [True, "(absent)"]}
    cc = ub["metrics"]["benchmark"]["cc"]
    assert cc["upper"]["values"] == [0.80, 0.82, 0.81]
    assert cc["gain"]["values"] == pytest.approx([0.10, 0.11, 0.12]) and cc["gain"]["verdict"] == "more labels better"
    assert cc["recovered"]["values"] == pytest.approx([0.05, 0.05, 0.04])
    assert cc["share"]["values"] == pytest.approx([0.5, 0.05 / 0.11, 0.04 / 0.12]) and cc["share"]["seeds"] == [1, 2, 3]
    assert cc["share_of_means"] == pytest.approx(0.14 / 0.33)
    kld = ub["metrics"]["benchmark"]["kld"]  # lower is better: both differences negative, share positive
    assert kld["gain"]["values"] == pytest.approx([-0.4, -0.4, -0.4]) and kld["gain"]["verdict"] == "more labels better"
    assert kld["share"]["values"] == pytest.approx([0.5, 0.5, 0.5]) and kld["share_of_means"] == pytest.approx(0.5)
    assert "upper bound: setting 'full'" in capsys.readouterr().out
    md = report.render_claim_section(report.load_claim(out))
    assert "Upper bound: setting full's labelled-only student" in md
    # gain .10, .11, .12: CI .11 ± .0248; recovered .05, .05, .04: CI .0467 ± 4.3027 * .00577 / sqrt 3
    assert ("| CC↑ benchmark | 0.8100 ± 0.0100 (3) | +0.1100 [+0.0852, +0.1348], p=0.003: more labels better | "
            "+0.0467 [+0.0323, +0.0610], p=0.005 | 0.42 | 0.50, 0.45, 0.33 |") in md
    assert cc["recovered"]["verdict"] == "semi_pkd better" and cc["gain"]["primary"] is True
    # every KLD gain is -0.4: std 0, the CI is the point, the verdict follows the sign
    assert kld["gain"]["ci95"] == pytest.approx([-0.4, -0.4]) and kld["gain"]["p"] == 0.0
    assert _png(report.plot_claim(report.load_claim(out), tmp_path / "claim.png"))[0] > 200
    # collected again without --upper-bound: the bound is kept; the bound recollected: recomputed
    assert _run(tmp_path, c100, "c100")[0] == 0
    assert json.loads(out.read_text())["settings"]["c100"]["upper_bound"] == ub
    better = {"student_no_pseudo": {"cc": [0.90, 0.92, 0.91], "kld": [0.5, 0.6, 0.7]}}
    assert _run(tmp_path, _hand_rows(copy.deepcopy(rows), better), "full")[0] == 0
    again = json.loads(out.read_text())["settings"]["c100"]["upper_bound"]["metrics"]["benchmark"]["cc"]
    assert again["gain"]["values"] == pytest.approx([0.20, 0.21, 0.22])
    assert again["share_of_means"] == pytest.approx(0.14 / 0.63)


def test_upper_bound_refusals(tmp_path, rows, capsys):
    scarce = {"student": {"cc": [0.75, 0.76, 0.73]}}
    assert _run(tmp_path, rows, "full")[0] == 0
    assert _run(tmp_path, _subset_rows(rows, scarce, labelled_subset=100), "c100", "--upper-bound", "nothere")[0] == 2
    assert "'nothere' as its upper bound, which is not another setting" in capsys.readouterr().err
    # a bound with the same labelled subset is no bound
    assert _run(tmp_path, _subset_rows(rows, {}, labelled_subset=100), "c100b")[0] == 0
    assert _run(tmp_path, _subset_rows(rows, scarce, labelled_subset=100), "c100c", "--upper-bound", "c100b")[0] == 2
    assert "the same data.labelled_subset" in capsys.readouterr().err
    # a bound trained another way is no bound: the differing key is named
    lr = _subset_rows(rows, scarce, labelled_subset=100)
    for state in [lr[0]] + [_exp(lr, GRID[k])["revs"][0] for k in GRID]:
        _params(state)["distill"]["lr"] = 0.002
    assert _run(tmp_path, lr, "c100lr", "--upper-bound", "full")[0] == 2
    err = capsys.readouterr().err
    assert "more than the labelled subset: distill.lr 0.002 (there 0.001)" in err
    got = json.loads((tmp_path / "claim.json").read_text())["settings"]
    assert "c100lr" not in got and "c100c" not in got  # a refused setting is not written


def _variant_rows(rows, numbers, **student):
    """A variant setting: ``student`` params set."""
    return _section_rows(rows, numbers, "student", **student)


def test_variant_of_on_hand_written_numbers(tmp_path, rows, capsys):
    """--variant-of: each arm this minus base, paired by seed, and the change of Semi-PKD's edge;
    the teacher, untouched by the change, differs by exactly 0; recomputed when the base changes."""
    base = {"student": {"cc": [0.75, 0.76, 0.73], "kld": [0.7, 0.8, 0.9]},
            "student_no_pseudo": {"cc": [0.70, 0.71, 0.69], "kld": [1.5, 1.5, 1.6]}}
    assert _run(tmp_path, _hand_rows(copy.deepcopy(rows), base), "relu")[0] == 0
    swish = {"student": {"cc": [0.77, 0.77, 0.76], "kld": [0.6, 0.6, 0.7]},
             "student_no_pseudo": {"cc": [0.74, 0.75, 0.73], "kld": [0.6, 0.7, 0.6]}}
    rc, out = _run(tmp_path, _variant_rows(rows, swish, decoder_act="swish"), "swish", "--variant-of", "relu")
    assert rc == 0
    var = json.loads(out.read_text())["settings"]["swish"]["variant_of"]
    assert var["setting"] == "relu" and var["differs"] == {"student.decoder_act": ["swish", "(absent)"]}
    semi, lo = var["arms"]["semi_pkd"]["benchmark"], var["arms"]["labelled_only"]["benchmark"]
    # .02, .01, .03: mean .02 > std .01 (a win under the old rule), but the 95% CI is
    # .02 ± 4.3027 * .01 / sqrt 3 = [-.0048, .0448]: within spread
    assert semi["cc"]["values"] == pytest.approx([0.02, 0.01, 0.03]) and semi["cc"]["verdict"] == "within spread"
    assert semi["cc"]["mean"] == pytest.approx(0.02) and semi["cc"]["std"] == pytest.approx(0.01)
    assert semi["cc"]["ci95"] == pytest.approx([-0.004841, 0.044841], abs=1e-6)
    assert lo["kld"]["values"] == pytest.approx([-0.9, -0.8, -1.0]) and lo["kld"]["verdict"] == "swish better"
    teacher = var["arms"]["teacher"]["benchmark"]["cc"]
    assert teacher["values"] == [0.0, 0.0, 0.0] and teacher["verdict"] == "within spread"
    # the edge: this (semi - lo) minus base's, by seed: cc (.03,.02,.03) - (.05,.05,.04)
    gap = var["gap"]["benchmark"]
    assert gap["cc"]["values"] == pytest.approx([-0.02, -0.03, -0.01])
    assert gap["cc"]["verdict"] == "within spread"  # -.02 ± .0248
    assert gap["kld"]["values"] == pytest.approx([0.8, 0.6, 0.8]) and gap["kld"]["verdict"] == "Semi-PKD's edge larger in relu"
    assert "variant of setting 'relu': student.decoder_act \"swish\"" in capsys.readouterr().out
    md = report.render_claim_section(report.load_claim(out))
    assert "Variant of setting relu: `student.decoder_act` \"swish\" (there \"(absent)\")" in md
    assert "| Labelled-only student (ablation): swish − relu | +0.0400 [+0.0400, +0.0400], p=<0.001: swish better |" in md
    # kept when collected again without the flag; recomputed when the base is collected again
    assert _run(tmp_path, _variant_rows(rows, swish, decoder_act="swish"), "swish")[0] == 0
    assert json.loads(out.read_text())["settings"]["swish"]["variant_of"] == var
    base["student_no_pseudo"]["cc"] = [0.80, 0.81, 0.79]
    assert _run(tmp_path, _hand_rows(copy.deepcopy(rows), base), "relu")[0] == 0
    again = json.loads(out.read_text())["settings"]["swish"]["variant_of"]["arms"]["labelled_only"]["benchmark"]["cc"]
    assert again["values"] == pytest.approx([-0.06, -0.06, -0.06]) and again["verdict"] == "relu better"


def test_variant_of_refusals(tmp_path, rows, capsys):
    assert _run(tmp_path, rows, "relu")[0] == 0
    same = _hand_rows(copy.deepcopy(rows), {"student": {"cc": [0.7, 0.7, 0.7]}})
    assert _run(tmp_path, same, "again", "--variant-of", "relu")[0] == 2
    assert "the same params as this one" in capsys.readouterr().err
    assert _run(tmp_path, _variant_rows(rows, {}, decoder_act="swish"), "swish", "--variant-of", "nothere")[0] == 2
    assert "'nothere' as its base setting (--variant-of), which is not another setting" in capsys.readouterr().err
    # no seed in common: nothing can be paired
    other_seeds = _variant_rows(rows, {}, decoder_act="swish")
    for k in GRID:
        _params(_exp(other_seeds, GRID[k])["revs"][0])["seed"] = 10 + k
    assert _run(tmp_path, other_seeds, "swish", "--variant-of", "relu")[0] == 2
    assert "shares fewer than 2 seeds" in capsys.readouterr().err
    assert set(json.loads((tmp_path / "claim.json").read_text())["settings"]) == {"relu"}


def _png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path).shape


def test_report_renders_the_study_and_draws_claim_png(tmp_path, rows):
    numbers = {"student": {"cc": [0.80, 0.82, 0.81]}, "student_no_pseudo": {"cc": [0.70, 0.71, 0.69]}}
    rc, out = _run(tmp_path, _hand_rows(rows, numbers), "osie-192", "--description", "OSIE at 192x192")
    assert rc == 0
    c = report.load_claim(out)
    md = report.render_claim_section(c)
    assert md.startswith("## Semi-PKD vs labelled-only, seeded (OSIE val)")
    assert "### osie-192 (OSIE val)" in md and "OSIE at 192x192" in md
    lines = md.splitlines()
    assert any(line.startswith("| Semi-PKD student | 0.8100 ± 0.0100 (3) |") for line in lines)
    assert any(line.startswith("| Labelled-only student (ablation) | 0.7000 ± 0.0100 (3) |") for line in lines)
    paired = next(line for line in lines if line.startswith("| Semi-PKD − labelled-only"))
    assert "+0.1100 [+0.0852, +0.1348], p=0.003: semi_pkd better" in paired
    assert "| Teacher |" in md and "| Center bias |" in md and "KLD↓ model res." in md
    with_claim = _png(report.plot_claim(c, tmp_path / "claim.png"))
    without = _png(report.plot_claim(None, tmp_path / "none.png"))
    assert with_claim[0] > without[0] and with_claim[1] > without[1]
    with pytest.raises(report.ClaimFormatError, match="non-empty 'settings'"):
        report.load_claim(REPO / "reports/real/osie.json")  # a real-data results file is not a claim


def test_report_stage_keeps_claim_json_away_from_the_real_results_loader(tmp_path, rows):
    """stages/report.py: every other reports/real/*.json as before, claim.json as its own section;
    claim.png is written with or without it."""
    stage = _load("report_stage", "stages/report.py")
    real = tmp_path / "real"
    real.mkdir()
    (real / "osie.json").write_text((REPO / "reports/real/osie.json").read_text())
    tables = tmp_path / "tables.md"
    tables.write_text("# Results\n")
    stage.append_real_results(tables, tmp_path / "figures/claim.png", real)
    md = tables.read_text()
    assert md.count("\n## ") == 1 and "Semi-PKD vs labelled-only, seeded" not in md
    assert _png(tmp_path / "figures/claim.png")[0] < 200  # the short "no seeded study" note
    _run(tmp_path, rows)
    (real / "claim.json").write_text((tmp_path / "claim.json").read_text())
    tables.write_text("# Results\n")
    stage.append_real_results(tables, tmp_path / "figures/claim.png", real)
    md = tables.read_text()
    assert md.count("\n## ") == 2 and md.index("## Semi-PKD vs labelled-only, seeded") > md.index("## ")
    assert _png(tmp_path / "figures/claim.png")[0] > 200


def test_stored_settings_compare_as_the_current_code_reads_them():
    """A setting stored before a key existed (the real setting (a) params, decoder_act removed)
    equals the same params with the key at its default; a non-default value still differs."""
    import yaml

    raw = yaml.safe_load((REPO / "params/claim_a.yaml").read_text())
    now = claim.resolved(raw)
    now.pop("seed")
    old = {k: v for k, v in now.items() if not k.endswith("decoder_act")}
    assert claim.unflatten(now)["student"]["decoder_act"] is None
    assert claim.params_diff(claim.reresolved(old), claim.reresolved(now)) == {}
    swish = {**now, "student.decoder_act": "swish"}
    assert claim.params_diff(claim.reresolved(old), claim.reresolved(swish)) == {"student.decoder_act": [None, "swish"]}


def test_committed_claim_json_is_current(tmp_path):
    """reports/real/claim.json loads under the current schema, quotes the current rule, and
    recomputing it from its stored per-seed values changes nothing."""
    committed = REPO / "reports/real/claim.json"
    if not committed.is_file():
        pytest.skip("no committed seeded study")
    data = report.load_claim(committed)
    assert data["rule"] == report.CLAIM_RULE
    copy_ = tmp_path / "claim.json"
    copy_.write_text(committed.read_text())
    assert claim.main(["--recompute", "--out", str(copy_)]) == 0
    assert json.loads(copy_.read_text()) == json.loads(committed.read_text())
