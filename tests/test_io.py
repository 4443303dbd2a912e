"""semipkd.io: atomic outputs get the permissions a plain ``open()``/``mkdir()`` would give them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from semipkd.io import atomic_dir, atomic_save_npy, atomic_torch_save, atomic_write_json, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_outputs_follow_the_umask_like_open(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() gives: the reference, not a hard-coded number
        plain_dir = tmp_path / "plain_dir"
        plain_dir.mkdir()
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "a.json", {"a": 1})
        atomic_save_npy(tmp_path / "a.npy", np.zeros(3))
        atomic_torch_save(tmp_path / "a.pt", {"w": torch.zeros(2)})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "inside.txt").write_text("y")
    finally:
        os.umask(old)
    assert _mode(plain) == 0o666 & ~umask
    for name in ("a.txt", "a.json", "a.npy", "a.pt"):
        assert _mode(tmp_path / name) == _mode(plain), name
    assert _mode(tmp_path / "d") == _mode(plain_dir) == 0o777 & ~umask


def test_a_replaced_file_keeps_its_mode_as_with_open(tmp_path: Path) -> None:
    dest = tmp_path / "m.json"
    dest.write_text("{}")
    os.chmod(dest, 0o640)
    old = os.umask(0o077)
    try:
        atomic_write_json(dest, {"b": 2})
    finally:
        os.umask(old)
    assert _mode(dest) == 0o640
    assert dest.read_text() == '{\n  "b": 2\n}\n'
