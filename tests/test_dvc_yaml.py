"""dvc.yaml is kept in step with the code it runs.

Every stage's ``deps`` must cover the package modules its script imports, directly or through
other package modules (module-level or inside functions), found by reading the imports with
``ast``; a missing one would let a change to that module go unnoticed by ``dvc repro``. And
paths that params name (``data.synthetic_root``) are the paths dvc.yaml declares.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_copy import REPO, default_params, make_copy

PACKAGE = "semipkd"


def _module_file(module: str) -> Path | None:
    """The file of a ``semipkd`` module (``.py`` or a package's ``__init__.py``), or None."""
    base = REPO / Path(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[str]:
    """Package modules imported anywhere in ``path`` (absolute and relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(REPO).with_suffix("")
    package = list(rel.parts[:-1])  # a module's package; for __init__.py, the package itself
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                # "from semipkd.models import x": x may be a submodule or a name in the package
                while name and _module_file(name) is None:
                    name = name.rpartition(".")[0]
                if name:
                    found.add(name)
    return found


def package_closure(script: Path) -> set[Path]:
    """Files of every package module ``script`` reaches through imports (parents included)."""
    todo, seen = list(_imports(script)), set()
    while todo:
        mod = todo.pop()
        # importing a.b.c runs a/__init__ and a/b/__init__ too
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):
            m = ".".join(parts[:i])
            if m not in seen:
                seen.add(m)
                todo.extend(_imports(_module_file(m)))
    return {_module_file(m).relative_to(REPO) for m in seen} - {Path(PACKAGE, "__init__.py")}


#: Package code a stage imports but whose changes cannot change that stage's outputs, with why.
EXEMPT = {
    "prepare": {
        "semipkd/models": "preflight only checks that the configured backbones and weights exist "
                          "(so a bad config stops before data is generated); prepare builds no model",
    },
}


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def _covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_cover_every_package_module_it_imports(stage):
    spec = _stages()[stage]
    script = Path(spec["cmd"].split()[1])
    deps = [next(iter(d)) if isinstance(d, dict) else d for d in spec["deps"]]
    assert str(script) in deps, f"{stage}: its script {script} is not a dep"
    deps += list(EXEMPT.get(stage, {}))
    missing = sorted(str(p) for p in package_closure(REPO / script) if not _covered(p, deps))
    assert missing == [], f"dvc.yaml stage {stage!r} imports {missing} but does not list them in deps"


def test_the_import_reader_follows_transitive_and_function_level_imports(tmp_path):
    # report.py imports semipkd.io at module level; the report stage reaches it through it
    closure = package_closure(REPO / "stages/report.py")
    assert Path("semipkd/report.py") in closure and Path("semipkd/io.py") in closure
    # a missing dep is caught: drop semipkd/io.py from a stage that needs it
    deps = ["stages/report.py", "semipkd/report.py", "semipkd/models"]
    assert not all(_covered(p, deps) for p in closure)


def test_synthetic_root_is_where_prepare_writes_and_what_dvc_declares(tmp_path):
    """Changing data.synthetic_root moves prepare's output and evaluate's dep, in dvc.yaml and in
    the stage itself (a tiny generated dataset, prepare only)."""
    params = default_params()
    params["data"]["synthetic_root"] = "data/generated"
    params["data"]["benchmarks"] = ["osie"]
    params["synthetic"].update(salicon_train=6, salicon_val=2, benchmark_images=4, unlabeled=3, image_size=[48, 64])
    params["prepare"].update(input_size=[16, 16], output_size=[16, 16], benchmark_size=[16, 16])
    env = make_copy(tmp_path / "repo", params)
    out = subprocess.run(
        [sys.executable, "-c", "import dvc.repo, json; r = dvc.repo.Repo('.'); "
         "print(json.dumps({s.addressing: [str(o.def_path) for o in s.outs] + ['|'] + [str(d.def_path) for d in s.deps]"
         " for s in r.index.stages}))"],
        cwd=tmp_path / "repo", env=env, check=True, capture_output=True, text=True,
    )
    stages = json.loads(out.stdout)
    assert "data/generated" in stages["prepare"]
    assert "data/generated" in stages["evaluate@osie"]
    assert not any("data/synthetic" in v for v in stages.values())
    subprocess.run([sys.executable, "-m", "dvc", "repro", "prepare"], cwd=tmp_path / "repo", env=env, check=True,
                   capture_output=True, text=True)
    assert (tmp_path / "repo/data/generated/salicon").is_dir()
    assert not (tmp_path / "repo/data/synthetic").exists()


STAGE_SCRIPTS = sorted(p for p in (REPO / "stages").glob("*.py") if p.name != "_checkout.py")


@pytest.mark.parametrize("script", STAGE_SCRIPTS, ids=lambda p: p.name)
def test_stage_imports_its_own_checkout_before_semipkd(script):
    """A queued experiment runs the code it was queued with: `_checkout` comes before any
    semipkd import, and each stage using the script lists `stages/_checkout.py` as a dep."""
    tree = ast.parse(script.read_text())
    order = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            order += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            order.append(node.module)
    first_pkg = next(i for i, m in enumerate(order) if m == PACKAGE or m.startswith(PACKAGE + "."))
    assert "_checkout" in order[:first_pkg], f"{script.name}: import _checkout before semipkd"
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    rel = f"stages/{script.name}"
    using = [name for name, st in stages.items() if rel in (st.get("do", st).get("cmd") or "")]
    assert using, f"no stage runs {rel}"
    for name in using:
        deps = stages[name].get("do", stages[name])["deps"]
        assert "stages/_checkout.py" in deps, f"stage {name}: stages/_checkout.py missing from deps"


def test_a_copy_of_the_repo_imports_its_own_package_not_the_installed_one(tmp_path):
    """What a queued DVC experiment is: a copy of the repo run with the project's interpreter,
    where `semipkd` is installed (editable) from the workspace. With `_checkout` the copy's
    package is imported; without it (the control) the installed one is."""
    copy = tmp_path / "exp"
    (copy / "stages").mkdir(parents=True)
    (copy / PACKAGE).mkdir()
    (copy / PACKAGE / "__init__.py").write_text("")
    (copy / "stages" / "_checkout.py").write_text((REPO / "stages" / "_checkout.py").read_text())
    probe = "import semipkd, pathlib; print(pathlib.Path(semipkd.__file__).resolve().parent)\n"
    (copy / "stages" / "with.py").write_text("import _checkout  # noqa: F401  (imported for its sys.path effect)\n" + probe)
    (copy / "stages" / "without.py").write_text(probe)
    installed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    if installed.returncode != 0:
        pytest.skip("semipkd is not installed in this interpreter: nothing to shadow")
    run = lambda name: subprocess.run([sys.executable, f"stages/{name}"], cwd=copy, capture_output=True,  # noqa: E731  (a one-line local helper; clearer here than a nested def)
                                      text=True, check=True).stdout.strip()
    assert run("with.py") == str((copy / PACKAGE).resolve())
    assert run("without.py") == installed.stdout.strip() != str((copy / PACKAGE).resolve())


PARAM_FILES = ["params.yaml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "params").glob("*.yaml"))]


@pytest.mark.parametrize("name", PARAM_FILES)
def test_params_files_are_written_the_way_dvc_writes_them_back(name, tmp_path):
    """`dvc exp run -S k=v` rewrites the whole params file in its own form (block lists, empty
    nulls); a file already in that form changes in the one value only, so an experiment's diff is
    its change. Fix a file that fails with: python -c "from dvc.utils.hydra import
    apply_overrides; apply_overrides('FILE', ['seed=SAME_SEED'])"."""
    from dvc.utils.hydra import apply_overrides

    src = REPO / name
    text = src.read_text()
    params = yaml.safe_load(text)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    apply_overrides(str(path), [f"seed={params['seed']}"])  # a no-op change, as DVC writes it
    assert path.read_text() == text, f"{name} is not in the form DVC writes back"
    width = params["student"]["width"]
    apply_overrides(str(path), [f"student.width={width / 2}"])
    # strict=False: the line counts are compared on the next line, with an assertion message.
    changed = [(a, b) for a, b in zip(text.splitlines(), path.read_text().splitlines(), strict=False) if a != b]
    assert len(text.splitlines()) == len(path.read_text().splitlines())
    assert len(changed) == 1 and changed[0][0].replace(f"width: {width}", f"width: {width / 2}") == changed[0][1], changed
