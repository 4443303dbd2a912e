"""Faults while writing (docs/reliability.md): a process SIGKILLed in the middle of writing a checkpoint, a
cache shard or a metrics file, and a disk that fills while a checkpoint or a pseudo-label shard
is written.

The disk really fills: the checkpoint or cache folder is a small tmpfs mounted in a private mount
namespace (``unshare -rm``), so the kernel answers ENOSPC exactly as a full disk does. Where
namespaces are not allowed the ENOSPC is injected at the write call instead (same code path from
there on), so the behaviour is checked on every machine.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from semipkd.io import WriteError, atomic_save_npy, atomic_torch_save, atomic_write_json

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent

pytestmark = pytest.mark.timeout(300)


def _unshare_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d"],
        capture_output=True,
    )
    return probe.returncode == 0


UNSHARE = _unshare_ok()

# ---------------------------------------------------------------------------------------------
# SIGKILL during writes

_WRITER = textwrap.dedent(
    """
    import sys, os, numpy as np, torch
    from semipkd.io import atomic_torch_save, atomic_save_npy, atomic_write_json
    out, naive = sys.argv[1], sys.argv[2] == "naive"
    big = torch.arange(6_000_000, dtype=torch.float32)  # 24 MB: a write takes tens of ms
    i = 0
    while True:
        i += 1
        obj = {{"version": i, "weights": big + i}}
        if naive:  # what atomic writes replace: the file is truncated, then filled
            torch.save(obj, os.path.join(out, "last.pt"))
        else:
            atomic_torch_save(os.path.join(out, "last.pt"), obj)
            atomic_save_npy(os.path.join(out, "shard_00000.npy"), np.full(3_000_000, i % 251, np.uint8))
            atomic_write_json(os.path.join(out, "metrics.json"), {{"step": i, "pad": "x" * 100_000}})
        if i == 1:  # every file exists once: from here on each kill lands among the writes
            print("written", flush=True)
    """
)


def _kill_writer(out: Path, naive: bool, delay: float) -> None:
    """Start the writer, wait until its first round of writes is complete, then kill it ``delay``
    seconds later. Timing from the first write, not from the start, keeps the kills among the
    writes however long a loaded machine takes to import torch."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER.format(), str(out), "naive" if naive else "atomic"],
                            env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "written", f"the writer ended before its first write (exit {proc.wait()})"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def _whole(out: Path) -> bool:
    """Each file present loads and is self-consistent (one version, not a mix)."""
    try:
        if (out / "last.pt").exists():
            obj = torch.load(out / "last.pt", weights_only=True)
            if not torch.equal(obj["weights"][:5], torch.arange(5, dtype=torch.float32) + obj["version"]):
                return False
        if (out / "shard_00000.npy").exists():
            a = np.load(out / "shard_00000.npy")
            if a.shape != (3_000_000,) or a.min() != a.max():
                return False
        if (out / "metrics.json").exists():
            json.loads((out / "metrics.json").read_text())
    except Exception:
        return False
    return True


@pytest.mark.fault("SIGKILL while a checkpoint, a cache shard and a metrics file are being written (12 kills)")
def test_sigkill_during_atomic_writes_never_leaves_a_half_written_file(tmp_path):
    rng = random.Random(0)
    out = tmp_path / "atomic"
    out.mkdir()
    for _ in range(12):
        _kill_writer(out, naive=False, delay=rng.uniform(0.0, 0.8))
        assert _whole(out), sorted(p.name for p in out.iterdir())
    assert (out / "last.pt").exists()
    # Leftover temp files are hidden (.name.*.tmp) and never taken for the file itself.
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in out.iterdir()
               if p.name not in ("last.pt", "shard_00000.npy", "metrics.json"))


def test_the_kill_check_catches_a_non_atomic_writer(tmp_path):
    """Control: the same kills against plain torch.save leave a broken file at least once."""
    rng = random.Random(0)
    out = tmp_path / "naive"
    out.mkdir()
    broken = 0
    for _ in range(12):
        _kill_writer(out, naive=True, delay=rng.uniform(0.0, 0.8))
        broken += not _whole(out)
        if broken:
            break
    assert broken, "12 kills mid-write never caught plain torch.save half-way"


# ---------------------------------------------------------------------------------------------
# No space left on the device

_FIT = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{tests!r}, {repo!r}]
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from test_engine import make_cfg, run_fit
    from semipkd.io import WriteError
    root, out, epochs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    try:
        run_fit(root, out, make_cfg(epochs=epochs))
    except WriteError as exc:
        print("WRITE-ERROR", exc.errno, exc, flush=True)
        sys.exit(3)
    """
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    sys.path.insert(0, str(TESTS))
    from test_engine import make_data

    return make_data(tmp_path_factory.mktemp("toy"))


def _fit(toy: Path, out: Path, epochs: int, *, tmpfs_kb: int | None = None) -> subprocess.CompletedProcess:
    script = _FIT.format(tests=str(TESTS), repo=str(REPO))
    cmd = [sys.executable, "-c", script, str(toy), str(out), str(epochs)]
    if tmpfs_kb is not None:
        # The checkpoint folder is a tmpfs of tmpfs_kb KiB; what is on it is copied out at the end.
        ckpt = out / "ckpt"
        ckpt.mkdir(parents=True, exist_ok=True)
        keep = out / "ckpt_after"
        shell = (
            f'mount -t tmpfs -o size={tmpfs_kb}k tmpfs "{ckpt}" && '
            f'{" ".join(shlex.quote(c) for c in cmd)}; rc=$?; cp -a "{ckpt}" "{keep}"; exit $rc'
        )
        cmd = ["unshare", "-rm", "sh", "-c", shell]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


@pytest.mark.skipif(not UNSHARE,
                    reason="no unprivileged mount namespaces here (unshare -rm); the injected variant below covers it")
@pytest.mark.fault("disk full (tmpfs) while writing a training checkpoint")
def test_disk_full_during_a_checkpoint_write_is_a_clear_error_and_keeps_the_previous_one(toy, tmp_path):
    # Size of one checkpoint, from a normal one-epoch run.
    probe = _fit(toy, tmp_path / "probe", 1)
    assert probe.returncode == 0, probe.stderr[-3000:]
    size_kb = (tmp_path / "probe/ckpt/last.pt").stat().st_size // 1024
    # Room for one checkpoint and a half: epoch 1's fits, epoch 2's temp file cannot.
    proc = _fit(toy, tmp_path / "full", 2, tmpfs_kb=int(size_kb * 1.5))
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("WRITE-ERROR"))
    assert f"WRITE-ERROR {errno.ENOSPC} " in line, line
    assert "ckpt/last.pt" in line and "No space left on device" in line and "previous last.pt is intact" in line
    # The survivor is the complete epoch-1 checkpoint, passing its integrity check.
    from semipkd.checkpoint import load_checkpoint

    kept = tmp_path / "full/ckpt_after/last.pt"
    assert sorted(p.name for p in kept.parent.iterdir()) == ["last.pt"]  # no temp file left behind
    raw = torch.load(kept, weights_only=True)
    ckpt = load_checkpoint(kept, raw["fingerprint"], main=True)
    assert ckpt is not None and ckpt["epoch"] == 0
    assert not (tmp_path / "full/model.pt").exists()


@pytest.mark.fault("disk full (injected ENOSPC at the write) while writing a training checkpoint")
def test_injected_enospc_during_a_checkpoint_write(toy, tmp_path, monkeypatch):
    sys.path.insert(0, str(TESTS))
    from semipkd import io as sio
    from test_engine import make_cfg, run_fit

    torch.set_num_threads(1)
    run_fit(toy, tmp_path, make_cfg(epochs=1))
    before = (tmp_path / "ckpt/last.pt").read_bytes()
    real = Path.write_bytes

    def full_disk(self, data):
        with open(self, "wb") as fh:  # half the bytes land, then the disk is full
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sio.Path, "write_bytes", full_disk)
    with pytest.raises(WriteError) as exc:
        run_fit(toy, tmp_path, make_cfg(epochs=2))
    monkeypatch.setattr(sio.Path, "write_bytes", real)
    assert exc.value.errno == errno.ENOSPC
    assert str(tmp_path / "ckpt/last.pt") in str(exc.value) and "previous last.pt is intact" in str(exc.value)
    assert (tmp_path / "ckpt/last.pt").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.pt"]


_PSEUDO = textwrap.dedent(
    """
    import sys, json
    sys.path[:0] = [{tests!r}, {repo!r}]
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from test_pseudolabel import write, teacher_model
    from semipkd.io import WriteError
    pool, out = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        print("SUMMARY", json.dumps(write(pool, out, teacher_model(), shard_size=2, store_size=(32, 32))), flush=True)
    except WriteError as exc:
        print("WRITE-ERROR", exc.errno, exc, flush=True)
    """
)


@pytest.mark.skipif(not UNSHARE, reason="no unprivileged mount namespaces here (unshare -rm)")
@pytest.mark.fault("disk full (tmpfs) while writing a pseudo-label shard, then space freed and rerun")
def test_disk_full_during_pseudolabels_then_rerun_reuses_the_shards_written(tmp_path):
    sys.path.insert(0, str(TESTS))
    from test_engine import write_prepared

    pool = write_prepared(tmp_path / "pool" / "all", 10, seed=5, labelled=False)
    out = tmp_path / "cache"
    out.mkdir()
    script = _PSEUDO.format(tests=str(TESTS), repo=str(REPO))
    run = " ".join(shlex.quote(c) for c in [sys.executable, "-c", script, str(pool), str(out)])
    # 5 shards of 2 maps; each file takes a 4 KiB tmpfs page: 24 KiB holds the progress file,
    # two shards with their range files and a temp file, then the disk is full.
    shell = (
        f'mount -t tmpfs -o size=24k tmpfs "{out}" && {run} && ls -a "{out}" && '
        f'mount -o remount,size=1m "{out}" && {run}'
    )
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    err = next(ln for ln in lines if ln.startswith("WRITE-ERROR"))
    assert f"WRITE-ERROR {errno.ENOSPC} " in err and str(out) in err and "No space left on device" in err, err
    summary = json.loads(next(ln for ln in lines if ln.startswith("SUMMARY"))[len("SUMMARY "):])
    assert summary["count"] == 10 and summary["shards"] == 5
    assert 1 <= summary["shards_reused"] < 5 and summary["shards_written"] == 5 - summary["shards_reused"]


@pytest.mark.fault("disk full (injected ENOSPC at the write) while writing a metrics or cache file")
def test_injected_enospc_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from semipkd import io as sio

    atomic_write_json(tmp_path / "metrics.json", {"cc": 0.5})
    atomic_save_npy(tmp_path / "shard_00000.npy", np.arange(10, dtype=np.uint8))

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sio.Path, "write_bytes", full_disk)
    with pytest.raises(WriteError, match="metrics.json: No space left on device; the previous metrics.json is intact"):
        atomic_write_json(tmp_path / "metrics.json", {"cc": 0.9})
    with pytest.raises(WriteError, match="no new.json was written"):
        atomic_torch_save(tmp_path / "new.json", {"x": 1})
    monkeypatch.undo()

    real_save = np.save

    def half_save(fh, arr, **kw):
        fh.write(b"\x93NUMPY")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", half_save)
    with pytest.raises(WriteError) as exc:
        atomic_save_npy(tmp_path / "shard_00000.npy", np.arange(20, dtype=np.uint8))
    monkeypatch.setattr(np, "save", real_save)
    assert exc.value.errno == errno.ENOSPC and "shard_00000.npy" in str(exc.value)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"cc": 0.5}
    assert np.array_equal(np.load(tmp_path / "shard_00000.npy"), np.arange(10, dtype=np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "shard_00000.npy"]
