"""The pseudo-label cache: fidelity to a fresh teacher forward, size per image, binding to the
teacher, refusal of corrupt shards, resume without recomputing finished shards, and the
student's pseudo dataset (flip of image and map together)."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semipkd import metrics
from semipkd.data import PreparedImages
from semipkd.models import build_model
from semipkd.pseudolabel import (
    MANIFEST,
    PROGRESS,
    CorruptCacheError,
    PseudoDataset,
    PseudoLabelCache,
    PseudoLabelCacheError,
    StaleCacheError,
    dequantize_maps,
    quantize_maps,
    write_pseudo_labels,
)
from test_engine import OUTPUT, one_thread, write_prepared  # noqa: F401  (one_thread: autouse)

SHA = "a" * 64


class CountingTeacher(torch.nn.Module):
    """Wraps a teacher, counts forward calls and can fail on the call numbered ``fail_on``."""

    def __init__(self, inner: torch.nn.Module, fail_on: int | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.fail_on = fail_on

    @property
    def output_size(self):
        return self.inner.output_size

    def forward(self, x):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt("simulated kill")
        return self.inner(x)


_TEACHERS: dict[tuple[int, int], torch.nn.Module] = {}


def teacher_model(output_size=OUTPUT) -> torch.nn.Module:
    """A fresh copy of one seeded teacher network (built once per output size)."""
    key = tuple(output_size)
    if key not in _TEACHERS:
        torch.manual_seed(0)
        model = build_model("mobilenet_v2", output_size=output_size, pretrained=False)
        # An untrained network predicts an almost flat map; scale its last layer so the maps
        # have the contrast of a trained teacher (background near 0, peaks near 1).
        with torch.no_grad():
            head = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            head.weight.mul_(40.0)
        _TEACHERS[key] = model.eval()
    return copy.deepcopy(_TEACHERS[key])


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("pool") / "all", 10, seed=5, labelled=False)


def write(pool: Path, out: Path, teacher, **kw):
    args = dict(teacher_sha256=SHA, store_size=(16, 16), batch_size=2, shard_size=4, device="cpu")
    args.update(kw)
    return write_pseudo_labels(teacher, PreparedImages(pool), out, **args)


def test_cached_map_equals_a_fresh_teacher_forward_within_quantisation(pool, tmp_path):
    """Stored at the output size: the only difference is the 8-bit rounding of each map's range."""
    teacher = teacher_model()
    summary = write(pool, tmp_path / "pseudo", teacher, store_size=OUTPUT)
    assert summary["count"] == 10 and summary["shards"] == 3 and summary["shards_written"] == 3
    cache = PseudoLabelCache(tmp_path / "pseudo", teacher_sha256=SHA)
    ds = PseudoDataset(pool, cache, OUTPUT, hflip=False, photometric=False, seed=0)
    images = PreparedImages(pool)
    with torch.no_grad():
        fresh = teacher(torch.stack([images[i]["image"] for i in range(10)]))
    cached = torch.stack([ds[i]["target"] for i in range(10)])
    assert cached.shape == fresh.shape == (10, *OUTPUT) and cached.dtype == torch.float32
    # the maps really vary (a flat map would make the comparison meaningless)
    span = fresh.amax((1, 2)) - fresh.amin((1, 2))
    assert float(span.min()) > 0.02
    # rounding to 1/255 of each map's range: error at most half a step (plus float slack)
    err = (cached - fresh).abs().amax((1, 2))
    assert bool((err <= span / 510 * 1.001 + 1e-6).all()), (err, span / 510)
    assert float(metrics.cc(cached, fresh).min()) >= 0.9999


def test_paper_resolution_costs_under_40kb_per_image_and_keeps_cc(tmp_path):
    """480x640 maps stored at 120x160 and upsampled back at load."""
    pool = write_prepared(tmp_path / "all", 4, seed=6, labelled=False)
    teacher = teacher_model(output_size=(480, 640))
    summary = write(pool, tmp_path / "pseudo", teacher, store_size=(120, 160), shard_size=4)
    # one shard: 4 maps of 120x160 bytes + 4 ranges of 8 bytes + two 128-byte .npy headers
    assert summary["bytes_per_image"] == (4 * 120 * 160 + 4 * 8 + 2 * 128) / 4 == 19_272
    assert summary["bytes_per_image"] <= 40_000
    cache = PseudoLabelCache(tmp_path / "pseudo", teacher_sha256=SHA)
    ds = PseudoDataset(pool, cache, (480, 640), hflip=False, photometric=False, seed=0)
    with torch.no_grad():
        fresh = teacher(torch.stack([PreparedImages(pool)[i]["image"] for i in range(4)]))
    cached = torch.stack([ds[i]["target"] for i in range(4)])
    assert float(metrics.cc(cached, fresh).min()) >= 0.999


def test_quantize_maps_known_values():
    maps = torch.tensor([[[0.0, 0.1], [0.2, 0.4]], [[0.0, 0.0], [0.0, 0.0]], [[0.5, 0.6], [0.7, 0.9]]])
    q, ranges = quantize_maps(maps, (2, 2))
    assert q.dtype == np.uint8 and ranges.dtype == np.float32
    np.testing.assert_array_equal(q[0], [[0, 64], [128, 255]])  # 255 * [0, .25, .5, 1], rounded
    np.testing.assert_array_equal(q[1], 0)
    np.testing.assert_array_equal(q[2], q[0])  # same shape of map, other range
    np.testing.assert_allclose(ranges, [[0.0, 0.4], [0.0, 0.0], [0.5, 0.9]], rtol=1e-6)
    back = dequantize_maps(q, ranges)
    np.testing.assert_allclose(back, maps.numpy(), atol=0.4 / 510 + 1e-7)
    # shrinking samples bilinearly: a 2x2 block average of a 4x4 map at scale 1/2
    big = torch.arange(16.0).reshape(1, 4, 4)
    q, ranges = quantize_maps(big, (2, 2))
    np.testing.assert_allclose(dequantize_maps(q, ranges)[0], [[2.5, 4.5], [10.5, 12.5]], atol=10 / 510)


def test_stale_cache_is_refused(pool, tmp_path):
    write(pool, tmp_path / "pseudo", teacher_model())
    with pytest.raises(StaleCacheError, match=rf"{MANIFEST}.*teacher sha256 {SHA}.*now {'b' * 64}"):
        PseudoLabelCache(tmp_path / "pseudo", teacher_sha256="b" * 64)


def test_corrupt_or_truncated_shard_is_refused_by_name(pool, tmp_path):
    out = tmp_path / "pseudo"
    write(pool, out, teacher_model())
    shard = out / "shard_00001.npy"
    original = shard.read_bytes()
    data = bytearray(original)
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptCacheError, match=r"shard_00001\.npy: sha256 does not match"):
        PseudoLabelCache(out, teacher_sha256=SHA)
    shard.write_bytes(bytes(data[:-100]))
    with pytest.raises(CorruptCacheError, match=r"shard_00001\.npy: unreadable or truncated"):
        PseudoLabelCache(out, teacher_sha256=SHA)
    shard.unlink()
    with pytest.raises(CorruptCacheError, match=r"shard_00001\.npy: listed in manifest.json but missing"):
        PseudoLabelCache(out, teacher_sha256=SHA)
    shard.write_bytes(original)
    PseudoLabelCache(out, teacher_sha256=SHA)  # restored: accepted again
    (out / "range_00002.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(CorruptCacheError, match=r"range_00002\.npy"):
        PseudoLabelCache(out, teacher_sha256=SHA)


def test_incomplete_cache_is_refused(pool, tmp_path):
    with pytest.raises(PseudoLabelCacheError, match="missing or unreadable"):
        PseudoLabelCache(tmp_path, teacher_sha256=SHA)


def test_rerun_after_a_kill_recomputes_only_unfinished_shards(pool, tmp_path):
    reference = tmp_path / "reference"
    write(pool, reference, teacher_model())

    out = tmp_path / "pseudo"
    # 10 images, shards of 4, batches of 2: calls 1-2 shard 0, 3-4 shard 1, 5 shard 2.
    # Die in the first call of shard 1: shard 0 is done, shard 1 never written.
    killed = CountingTeacher(teacher_model(), fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        write(pool, out, killed)
    assert not (out / MANIFEST).exists()
    assert json.loads((out / PROGRESS).read_text())["shards"][0]["name"] == "shard_00000.npy"
    # debris of a killed write: a temp file, and a shard file no progress entry vouches for
    (out / ".shard_00001.npy.x1y2.tmp").write_bytes(b"half a shard")
    np.save(out / "shard_00001.npy", np.zeros((4, 16, 16), np.uint8))

    counting = CountingTeacher(teacher_model())
    summary = write(pool, out, counting)
    assert counting.calls == 3  # shard 1 (2 batches) and shard 2 (1 batch); shard 0 reused
    assert summary["shards_reused"] == 1 and summary["shards_written"] == 2
    assert not (out / PROGRESS).exists() and not list(out.glob(".*.tmp"))
    for name in ("shard_00000.npy", "shard_00001.npy", "shard_00002.npy", "range_00001.npy"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == json.loads((reference / MANIFEST).read_text())

    # a damaged complete cache keeps its intact shards: only shard 2 is recomputed
    (out / "range_00002.npy").unlink()
    damaged = CountingTeacher(teacher_model())
    assert write(pool, out, damaged)["shards_reused"] == 2 and damaged.calls == 1
    assert json.loads((out / MANIFEST).read_text()) == manifest

    # a complete cache for the same teacher is kept as is
    again = CountingTeacher(teacher_model())
    assert write(pool, out, again)["shards_reused"] == 3 and again.calls == 0
    # another teacher invalidates it: everything is recomputed and the manifest rebinds
    other = CountingTeacher(teacher_model())
    write(pool, out, other, teacher_sha256="c" * 64)
    assert other.calls == 5
    PseudoLabelCache(out, teacher_sha256="c" * 64)


def test_pseudo_dataset_flips_image_and_map_together(pool, tmp_path):
    write(pool, tmp_path / "pseudo", teacher_model())
    cache = PseudoLabelCache(tmp_path / "pseudo", teacher_sha256=SHA)
    plain = PseudoDataset(pool, cache, OUTPUT, hflip=False, photometric=False, seed=0)
    flipping = PseudoDataset(pool, cache, OUTPUT, hflip=True, photometric=False, seed=0)
    flips = 0
    for epoch in range(3):
        flipping.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], flipping[i]
            assert b["index"] == i
            if torch.equal(b["image"], a["image"]):
                assert torch.equal(b["target"], a["target"])
            else:
                flips += 1
                assert torch.equal(b["image"], a["image"].flip(-1))
                assert torch.equal(b["target"], a["target"].flip(-1))
    assert 0 < flips < 30
    # photometric augmentation changes the image only
    coloured = PseudoDataset(pool, cache, OUTPUT, hflip=False, photometric=True, seed=0)
    assert torch.equal(coloured[1]["target"], plain[1]["target"])
    assert not torch.equal(coloured[1]["image"], plain[1]["image"])
    # the upsampled target is the cached map brought to the output size
    expected = F.interpolate(torch.from_numpy(cache[2])[None, None], size=OUTPUT, mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(plain[2]["target"], expected.clamp(0, 1))


def test_cache_pickles_without_its_memory_maps(pool, tmp_path):
    write(pool, tmp_path / "pseudo", teacher_model())
    cache = PseudoLabelCache(tmp_path / "pseudo", teacher_sha256=SHA)
    first = cache[7]
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._maps == {} and len(pickle.dumps(cache)) < 10_000
    np.testing.assert_array_equal(copy[7], first)
    with pytest.raises(IndexError):
        cache[10]


def test_blur_switch_stores_the_teachers_unblurred_maps_and_binds_the_cache_to_it(pool, tmp_path):
    """``pseudolabel.blur: false`` caches the teacher's maps without its eval blur (exactly the
    blurred cache's maps before the 11x11 blur); the manifest records the switch, and a cache
    written with the other setting is recomputed, never reused."""
    from semipkd.models import GaussianBlur, eval_blur

    teacher = teacher_model()
    blurred = write(pool, tmp_path / "pseudo", teacher, store_size=OUTPUT)
    assert blurred["blur"] is True
    on = PseudoLabelCache(tmp_path / "pseudo", teacher_sha256=SHA)
    on_maps = np.stack([on[i] for i in range(len(on))])
    plain = write(pool, tmp_path / "pseudo", teacher, store_size=OUTPUT, blur=False)
    assert plain["blur"] is False and plain["shards_written"] == 3 and plain["shards_reused"] == 0
    off = PseudoLabelCache(tmp_path / "pseudo", teacher_sha256=SHA)
    off_maps = torch.from_numpy(np.stack([off[i] for i in range(len(off))]))
    # Blurring the unblurred maps gives the blurred cache back (to the 8-bit quantisation).
    reblurred = GaussianBlur()(off_maps[:, None])[:, 0].numpy()
    assert np.abs(reblurred - on_maps).max() < 3 / 255
    assert np.abs(off_maps.numpy() - on_maps).max() > 0.05  # and the switch did something
    # the switch is restored after use, also inside the teacher
    assert all(m.enabled for m in teacher.modules() if isinstance(m, GaussianBlur))
    with eval_blur(teacher, False):
        assert not any(m.enabled for m in teacher.modules() if isinstance(m, GaussianBlur))
    assert all(m.enabled for m in teacher.modules() if isinstance(m, GaussianBlur))
