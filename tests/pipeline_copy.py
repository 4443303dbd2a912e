"""Running the real DVC pipeline in a throw-away copy of the repo (shared by the end-to-end,
real-data and fault tests).

A copy holds the checkout's code and config only (no committed outputs, which would make the
first repro a no-op), its own ``params.yaml``, and a fresh git repository, so ``dvc repro`` and
``dvc exp run`` behave as in a user's clone. ``PYTHONPATH`` points at the copy, so the stages
import the copy's package rather than the checkout's editable install.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=semipkd-test", "-c", "user.email=test@semipkd.invalid"]

# The tiny pipeline of the end-to-end and fault tests: small enough to run in about a minute and
# a half on 2 cores, large enough to learn something; one image per pseudo-label shard so that a
# kill can land between shards; several steps per epoch so that one can land inside an epoch.
TINY = {
    "synthetic": {"salicon_train": 80, "salicon_val": 20, "benchmark_images": 30, "unlabeled": 64,
                  "image_size": [72, 96]},
    "prepare": {"input_size": [64, 80], "output_size": [64, 80], "benchmark_size": [64, 64]},
    "data": {"benchmarks": ["mit1003", "osie"]},
    "train_teacher": {"epochs": 3, "batch_size": 16},
    "distill": {"epochs": 3, "batch_size": 16},
    "finetune": {"epochs": 2, "batch_size": 8},
    "pseudolabel": {"batch_size": 1, "store_size": [32, 40], "shard_size": 1},
    "evaluate": {"num_figures": 2},
    "report": {"latency_input_size": [64, 80], "latency_repeats": 1},
}


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, recursively for nested mappings."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def default_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


#: Committed files that are dependencies of stages (not outputs): the real-data results and the
#: CPU latencies that the report stage renders.
KEEP = ("reports/real/", "reports/benchmarks/latency.json")
#: Keys that name wall-clock figures; no DVC-tracked metrics file may hold one.
TIMING_KEY = re.compile(r"(seconds|_s|_ms|per_s|latency|time|elapsed|duration|throughput|ips)$", re.IGNORECASE)


def timing_keys(obj, where: str = "") -> list[str]:
    """Paths of the keys in a JSON value that name wall-clock figures."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{where}/{k}"
            if TIMING_KEY.search(str(k)):
                found.append(path)
            found += timing_keys(v, path)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += timing_keys(v, f"{where}[{i}]")
    return found


def tracked_metrics(root: Path) -> list[Path]:
    """The metrics files dvc.yaml declares under ``root`` (``foreach`` stages expanded)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    out = []
    for stage in stages.values():
        items = [None]
        if "foreach" in stage:
            items, stage = list(_lookup(params, stage["foreach"].strip("${} "))), stage["do"]
        for entry in stage.get("metrics", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            for item in items:
                out.append(root / _interpolate(path if item is None else path.replace("${item}", item), params))
    return out


def stage_names(root: Path) -> list[str]:
    """Every stage of ``root``'s dvc.yaml as `dvc repro` names it (``foreach`` items as
    ``stage@item``), in file order."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    names = []
    for name, stage in stages.items():
        if "foreach" in stage:
            names += [f"{name}@{item}" for item in _lookup(params, stage["foreach"].strip("${} "))]
        else:
            names.append(name)
    return names


def _lookup(params: dict, dotted: str):
    """The value at a dotted params key (``data.benchmarks``)."""
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


def _interpolate(text: str, params: dict) -> str:
    """dvc.yaml's ``${a.b}`` params references in ``text``, replaced by their values."""
    return re.sub(r"\$\{([\w.]+)\}", lambda m: str(_lookup(params, m.group(1))), text)


def make_copy(dest: Path, params: dict, *, keep: tuple[str, ...] = KEEP) -> dict[str, str]:
    """Copy the repo's code and config to ``dest``, write ``params``, git-commit it all.

    ``keep``: prefixes of otherwise-skipped output paths to copy too; by default the committed
    real-data results and CPU latencies, which the report stage renders (dependencies in dvc.yaml).
    Returns the environment to run ``dvc`` and the stages with.
    """
    dest.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split("\n")
    for rel in filter(None, files):
        src = REPO / rel
        if not src.is_file():
            continue
        if not rel.startswith(keep) and (rel.startswith(("reports/", "data/", "models/")) or rel == "dvc.lock"):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    write_params(dest, params)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "config", "user.name", "semipkd-test"], cwd=dest, check=True)
    subprocess.run(["git", "config", "user.email", "test@semipkd.invalid"], cwd=dest, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*GIT, "commit", "-qm", "copy"], cwd=dest, check=True)
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(DVC_NO_ANALYTICS="1", DVC_NO_UPDATE_CHECK="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    env["PYTHONPATH"] = str(dest)
    return env


class Copy:
    """A copy of the repo made by :func:`make_copy`, with the params and environment it runs with."""

    def __init__(self, root: Path, params: dict, *, keep: tuple[str, ...] = KEEP) -> None:
        self.root, self.params = root, params
        self.env = make_copy(root, params, keep=keep)
        #: Every stage a `dvc repro` through :meth:`repro` ran to the end in this copy.
        self.ran: set[str] = set()

    def repro(self, *targets: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = dvc(self.root, "repro", *targets, env=self.env, check=check)
        if proc.returncode == 0:
            self.ran |= set(ran_stages(proc.stdout))
        return proc

    def cmd(self, *targets: str) -> list[str]:
        return [sys.executable, "-m", "dvc", "repro", *targets]


def write_params(dest: Path, params: dict) -> None:
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def dvc(cwd: Path, *args: str, env: dict, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """``dvc ARGS`` in ``cwd``; with ``check`` a failure raises with the tail of its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def ran_stages(stdout: str) -> list[str]:
    """Names of the stages a ``dvc repro`` output says it ran."""
    return [line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage '")]


def kill_when(
    cmd: list[str], cwd: Path, env: dict, ready: Callable[[], bool], *, delay: float = 0.0, timeout: float = 300
) -> subprocess.Popen:
    """Start ``cmd`` in its own process group; once ``ready()`` is true wait ``delay`` seconds
    and SIGKILL the whole group (dvc and the stage it runs). Fails if it ends first."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise AssertionError(f"{' '.join(cmd)} ended (rc {proc.returncode}) before the kill point:\n{out[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{' '.join(cmd)}: kill point not reached in {timeout} s")
            time.sleep(0.02)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc
