"""The teacher's pseudo-labels, computed once and cached on disk as sharded uint8 maps.

The paper's script runs the teacher on every unlabeled batch of every epoch. Here
:func:`write_pseudo_labels` runs it once over the pool and :class:`PseudoLabelCache` serves the
maps to every epoch of the student's training from memory-mapped shards.

Cache format (``out_dir``)::

    shard_00000.npy ...  uint8 (n, h, w): q = round(255 * (map - lo) / (hi - lo)) per image
    range_00000.npy ...  float32 (n, 2): (lo, hi), each map's min and max at the stored size
    manifest.json        written last; its presence means the cache is complete:
        {"version": 2, "teacher_sha256", "blur", "target_size": [h, w] or null, "store_size": [h, w],
         "output_size": [H, W] (the teacher's),
         "shard_size", "count", "images": {image-set fingerprint},
         "shards": [{"name", "sha256", "range_name", "range_sha256", "count"}, ...],
         "bytes_per_image", "encoding"}
    progress.json        only while a run is unfinished: the same header and the shards done

A map is decoded as ``lo + (q / 255) * (hi - lo)``: the teacher's own values in [0, 1], to
within half a quantisation step of its range.

Why this format:

* **uint8, not float16.** 8 bits per pixel spent on each map's own range [lo, hi] (plus 8 bytes
  per image for the range) bound the error by (hi - lo) / 510, invisible next to the teacher's
  own error: the CC between a cached map and a fresh forward is above 0.9999 when nothing is
  resized (``tests/test_pseudolabel.py``), the same precision every benchmark ships its ground
  truth in (8-bit PNG). float16 would double the size for precision nobody can use. The range is
  stored rather than assuming [0, 1] because an undertrained teacher's maps can sit in a narrow
  band (say 0.42 to 0.50): value/255 would leave them a few dozen levels, and normalising the
  range away would change the KLD target (KLD is not invariant to an offset).
* **Stored smaller than the output.** Saliency maps are smooth (coarse decoder features,
  bilinear upsampling, then the eval-mode 11x11 blur), so the paper's 480x640 output is stored
  at a quarter of its size in each direction, 120x160: 19,208 bytes per image, 2.4 GB for the
  123,000-image pool, against 40 KB allowed. Maps are shrunk by bilinear sampling and grown back
  bilinearly at load (:class:`PseudoDataset`); measured on toy maps at 480x640, that round trip
  keeps CC >= 0.999 (an antialiased shrink blurs more and scored lower). ``docs/training.md``
  lists CC against store size, including a worst case of texture-like maps, where a larger
  store size is the remedy.
* **Shards.** A few hundred files of a few thousand maps each: no 123,000-file directory, and
  each shard is ``np.load(mmap_mode="r")``-ed, so the pool never has to fit in memory and a
  DataLoader worker reads only the pages it needs.
* **Bound to the teacher.** The manifest records the sha256 of the teacher checkpoint;
  :class:`PseudoLabelCache` refuses a cache made by another teacher, and each file's sha256, so
  a corrupt or truncated shard is refused by name. (DVC reruns the stage when the teacher
  changes; the check catches a cache used outside DVC.)
* **Resumable.** Shards are written atomically one by one and recorded in ``progress.json``
  (also atomic); a killed run that is started again verifies the recorded shards by hash and
  recomputes only the rest. A shard that is half-written is never visible under its name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from semipkd.data import PreparedImages, augment_pair, augmentation_rng, photometric_ops
from semipkd.errors import SemipkdError
from semipkd.io import atomic_save_npy, atomic_write_json, sha256_file
from semipkd.models.decoder import eval_blur
from semipkd.runtime import autocast, dist_info

__all__ = [
    "write_pseudo_labels",
    "PseudoLabelCache",
    "PseudoDataset",
    "PseudoLabelCacheError",
    "StaleCacheError",
    "CorruptCacheError",
    "quantize_maps",
    "dequantize_maps",
    "MANIFEST",
    "PROGRESS",
    "FORMAT_VERSION",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
FORMAT_VERSION = 2
ENCODING = "map = lo + q / 255 * (hi - lo); q uint8 in shard_*.npy, (lo, hi) float32 in range_*.npy; bilinear to store_size"
_SHARD_FMT = "shard_{:05d}.npy"
_RANGE_FMT = "range_{:05d}.npy"


class PseudoLabelCacheError(SemipkdError, RuntimeError):
    """A pseudo-label cache that cannot be used; the message names the file and the fix."""


class StaleCacheError(PseudoLabelCacheError):
    """The cache was made by another teacher (or for another image set)."""


class CorruptCacheError(PseudoLabelCacheError):
    """A shard is missing, truncated, or does not match its recorded hash."""


# --------------------------------------------------------------------------------------------
# Writing


def quantize_maps(maps: torch.Tensor, store_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Teacher maps -> the stored form ``(q, ranges)``.

    ``maps``: float (B, H, W). Resized to ``store_size`` by bilinear sampling, then each map is
    quantised on its own range. Returns uint8 ``q`` (B, h, w) and float32 ``ranges`` (B, 2) of
    (lo, hi); a constant map has q = 0 and lo = hi. Inverse: :func:`dequantize_maps`.
    """
    if maps.dim() != 3:
        raise ValueError(f"expected maps of shape (B, H, W), got {tuple(maps.shape)}")
    h, w = (int(s) for s in store_size)
    x = maps.detach().float()
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    q = torch.where(span > 0, (x - lo) / span.clamp_min(1e-30), torch.zeros_like(x))
    q = torch.round(q * 255).to(torch.uint8)
    ranges = torch.cat([lo.flatten(1), hi.flatten(1)], dim=1)
    return q.cpu().numpy(), ranges.cpu().numpy().astype(np.float32)


def dequantize_maps(q: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """uint8 (..., h, w) and float32 (..., 2) ranges -> float32 maps ``lo + q / 255 * (hi - lo)``."""
    lo = ranges[..., 0, None, None].astype(np.float32)
    hi = ranges[..., 1, None, None].astype(np.float32)
    return lo + q.astype(np.float32) * ((hi - lo) / np.float32(255.0))


def _names_sha256(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _image_set_fingerprint(images: Dataset) -> dict[str, Any]:
    """What identifies the image set: its size, its image names (when it has them) and, for a
    prepared folder, its meta.json."""
    fp: dict[str, Any] = {"count": len(images)}
    if hasattr(images, "names"):
        fp["names_sha256"] = _names_sha256(list(images.names))
    for attr in ("path", "root", "folder"):
        folder = getattr(images, attr, None)
        if folder is not None and (Path(folder) / "meta.json").is_file():
            fp["meta_sha256"] = sha256_file(Path(folder) / "meta.json")
            break
    return fp


def _header(teacher_sha256: str, store_size: Sequence[int], shard_size: int, images_fp: Mapping[str, Any],
            blur: bool, target_size: Sequence[int] | None) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "teacher_sha256": teacher_sha256,
        "blur": bool(blur),
        "target_size": None if target_size is None else [int(s) for s in target_size],
        "store_size": [int(s) for s in store_size],
        "shard_size": int(shard_size),
        "images": dict(images_fp),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is not valid JSON: ignoring it", path)
        return None


def _same_header(doc: Mapping[str, Any] | None, header: Mapping[str, Any]) -> bool:
    return doc is not None and all(doc.get(k) == v for k, v in header.items())


def _shard_ok(out_dir: Path, entry: Mapping[str, Any]) -> bool:
    """Both files of a recorded shard exist and hash to what was recorded."""
    for name_key, hash_key in (("name", "sha256"), ("range_name", "range_sha256")):
        path = out_dir / str(entry.get(name_key, ""))
        if not path.is_file() or sha256_file(path) != entry.get(hash_key):
            return False
    return True


def write_pseudo_labels(
    teacher: nn.Module,
    images: Dataset | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    teacher_sha256: str,
    store_size: Sequence[int],
    batch_size: int,
    shard_size: int,
    device: torch.device | str,
    num_workers: int = 0,
    blur: bool = True,
    target_size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run ``teacher`` once over ``images`` and cache its maps in ``out_dir`` (format above).

    Args:
        teacher: a saliency model, (B, 3, H, W) float [0, 1] -> (B, H_out, W_out) in [0, 1]; put
            in eval mode here (its eval-mode blur is part of its prediction).
        images: items ``{"image": (3, H, W) float [0, 1], ...}`` without augmentation (a
            :class:`semipkd.data.PreparedImages`), or the path of a prepared image folder.
        out_dir: the cache folder.
        teacher_sha256: sha256 of the teacher's checkpoint file, recorded in the manifest.
        store_size: (h, w) the maps are stored at.
        batch_size, shard_size: images per forward pass and per shard file.
        device: where the teacher runs (autocast on CUDA).
        num_workers: DataLoader workers reading the images.
        blur: keep the teacher's eval-mode blur (the paper's code labels in eval mode, blur
            on); ``False`` stores the unblurred maps, so the student's targets are not blurred
            twice (once here, once by the student's own eval blur when it is scored).
        target_size: the output size of the student the maps are for (recorded; a student of
            another size is refused at load, see :class:`PseudoLabelCache`). The teacher may
            work at its own resolution: its maps are resized to ``store_size`` either way.

    Returns ``{"count", "shards", "shards_reused", "shards_written", "store_size",
    "bytes_per_image", "images_per_s", "teacher_sha256"}``. A complete cache for the same
    teacher, size and images is verified and kept as is; a damaged one keeps its intact shards.
    Runs in one process (``RuntimeError`` under ``torchrun`` with WORLD_SIZE > 1).
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    if len(store_size) != 2 or any(int(s) < 1 for s in store_size):
        raise ValueError(f"store_size must be (h, w) of positive ints, got {store_size!r}")
    if dist_info()[1] > 1:
        # One forward pass per image does not need several processes, and N processes writing
        # one cache would trample each other's shards and progress file.
        raise RuntimeError("write_pseudo_labels runs in a single process; start the pseudolabel stage without torchrun")
    if isinstance(images, (str, os.PathLike)):

        images = PreparedImages(images, hflip=False, photometric=False, seed=0)
    n = len(images)
    if n == 0:
        raise ValueError("the image set is empty: nothing to label")
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = _header(teacher_sha256, store_size, shard_size, _image_set_fingerprint(images), blur, target_size)
    n_shards = -(-n // shard_size)
    names = [_SHARD_FMT.format(i) for i in range(n_shards)]

    manifest_path, progress_path = out_dir / MANIFEST, out_dir / PROGRESS
    manifest = _read_json(manifest_path)
    progress = _read_json(progress_path)
    if _same_header(manifest, header):
        if len(manifest.get("shards", [])) == n_shards and all(_shard_ok(out_dir, e) for e in manifest["shards"]):
            log.info("%s: complete cache for this teacher found, nothing to do", manifest_path)
            return _summary(manifest, reused=n_shards, written=0, seconds=0.0, images_done=0)
        # A damaged complete cache: its intact shards are as good as a progress record.
        log.warning("%s: some shards are missing or damaged; recomputing from the first bad one", manifest_path)
        progress = manifest
    elif manifest is not None:
        log.info("%s belongs to another teacher, store size or image set: recomputing", manifest_path)
    # From here on the folder is being (re)built: no manifest may claim it is complete.
    if manifest_path.exists():
        manifest_path.unlink()

    done: list[dict[str, Any]] = []
    if _same_header(progress, header):
        for i, entry in enumerate(progress.get("shards", [])):
            if i >= n_shards or entry.get("name") != names[i] or not _shard_ok(out_dir, entry):
                break
            done.append(dict(entry))
        if done:
            log.info("%s: resuming, %d of %d shards already done", progress_path, len(done), n_shards)
    elif progress is not None:
        log.warning("%s belongs to another teacher, size or image set: starting over", progress_path)
    # Leftovers of an older run or a killed write: stale shards beyond the verified ones, temp files.
    keep = {e["name"] for e in done} | {e["range_name"] for e in done}
    for p in out_dir.iterdir():
        ours = p.name.startswith(("shard_", "range_")) and p.name.endswith(".npy")
        if (ours and p.name not in keep) or (p.name.startswith(".") and p.name.endswith(".tmp")):
            p.unlink()
    atomic_write_json(progress_path, {**header, "shards": done})

    teacher = teacher.to(device).eval()
    if not blur:
        log.info("labelling with the teacher's eval blur off (pseudolabel.blur: false)")
    reused = len(done)
    start = time.perf_counter()
    images_done = 0
    bar = tqdm(total=n, initial=reused * shard_size if reused < n_shards else n, desc="pseudo-labels", unit="img", disable=None)
    for i in range(reused, n_shards):
        lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
        with eval_blur(teacher, blur):
            q, ranges = _label_range(teacher, images, lo, hi, store_size, batch_size, device, num_workers, bar)
        range_name = _RANGE_FMT.format(i)
        atomic_save_npy(out_dir / range_name, ranges)
        atomic_save_npy(out_dir / names[i], q)
        done.append(
            {
                "name": names[i],
                "sha256": sha256_file(out_dir / names[i]),
                "range_name": range_name,
                "range_sha256": sha256_file(out_dir / range_name),
                "count": hi - lo,
            }
        )
        atomic_write_json(progress_path, {**header, "shards": done})
        images_done += hi - lo
    bar.close()
    seconds = time.perf_counter() - start

    total_bytes = sum((out_dir / e[k]).stat().st_size for e in done for k in ("name", "range_name"))
    manifest = {
        **header,
        "output_size": _output_size(teacher),
        "count": n,
        "shards": done,
        "bytes_per_image": total_bytes / n,
        "encoding": ENCODING,
    }
    atomic_write_json(manifest_path, manifest)
    progress_path.unlink()
    log.info(
        "pseudo-labels: %d maps in %d shards (%d reused), %.0f bytes/image -> %s",
        n,
        n_shards,
        reused,
        total_bytes / n,
        out_dir,
    )
    return _summary(manifest, reused=reused, written=n_shards - reused, seconds=seconds, images_done=images_done)


def _output_size(teacher: nn.Module) -> list[int] | None:
    size = getattr(teacher, "output_size", None)
    return None if size is None else [int(s) for s in size]


def _summary(manifest: Mapping[str, Any], *, reused: int, written: int, seconds: float, images_done: int) -> dict[str, Any]:
    return {
        "count": manifest["count"],
        "shards": len(manifest["shards"]),
        "shards_reused": reused,
        "shards_written": written,
        "store_size": list(manifest["store_size"]),
        "bytes_per_image": manifest["bytes_per_image"],
        "images_per_s": images_done / seconds if seconds > 0 else 0.0,
        "teacher_sha256": manifest["teacher_sha256"],
        "blur": manifest["blur"],
        "target_size": manifest["target_size"],
    }


@torch.inference_mode()
def _label_range(
    teacher: nn.Module,
    images: Dataset,
    lo: int,
    hi: int,
    store_size: Sequence[int],
    batch_size: int,
    device: torch.device,
    num_workers: int,
    bar: tqdm,
) -> tuple[np.ndarray, np.ndarray]:
    """Quantised maps uint8 (hi - lo, h, w) and ranges float32 (hi - lo, 2) of images ``lo..hi-1``."""
    loader = DataLoader(
        Subset(images, range(lo, hi)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    out = np.empty((hi - lo, int(store_size[0]), int(store_size[1])), dtype=np.uint8)
    out_ranges = np.empty((hi - lo, 2), dtype=np.float32)
    k = 0
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        with autocast(device, True):
            maps = teacher(x)
        q, ranges = quantize_maps(maps.float(), store_size)
        out[k : k + len(q)] = q
        out_ranges[k : k + len(q)] = ranges
        k += len(q)
        bar.update(len(q))
    if k != hi - lo:
        raise RuntimeError(f"labelled {k} images where {hi - lo} were expected (images {lo}..{hi - 1})")
    return out, out_ranges


# --------------------------------------------------------------------------------------------
# Reading


class PseudoLabelCache:
    """Read access to a complete cache written by :func:`write_pseudo_labels`.

    ``cache[i]`` is the teacher's map of image ``i``: float32 (h, w) in [0, 1] at the stored size.
    Opening checks the manifest against ``teacher_sha256`` and, when given, the student's output
    ``target_size`` the cache was made for (:class:`StaleCacheError`), and every
    shard's shape and, with ``verify``, sha256 (:class:`CorruptCacheError`); errors name the
    file. Shards are memory-mapped lazily in each process (a DataLoader worker opens its own).
    """

    def __init__(self, out_dir: str | os.PathLike, *, teacher_sha256: str, verify: bool = True,
                 target_size: Sequence[int] | None = None) -> None:
        self.out_dir = Path(out_dir)
        manifest_path = self.out_dir / MANIFEST
        manifest = _read_json(manifest_path) if manifest_path.is_file() else None
        if manifest is None:
            unfinished = (self.out_dir / PROGRESS).exists()
            hint = ("an unfinished run left progress.json: run the pseudolabel stage again" if unfinished
                    else "run the pseudolabel stage")
            raise PseudoLabelCacheError(f"{manifest_path}: missing or unreadable, the cache is not complete ({hint})")
        if manifest.get("version") != FORMAT_VERSION:
            raise PseudoLabelCacheError(
                f"{manifest_path}: format version {manifest.get('version')!r}, expected {FORMAT_VERSION}; rerun pseudolabel"
            )
        if manifest.get("teacher_sha256") != teacher_sha256:
            raise StaleCacheError(
                f"{manifest_path}: pseudo-labels were made by teacher sha256 {manifest.get('teacher_sha256')}, "
                f"but the teacher is now {teacher_sha256}; rerun the pseudolabel stage"
            )
        bound = manifest.get("target_size")
        if target_size is not None and bound is not None and list(bound) != [int(v) for v in target_size]:
            raise StaleCacheError(
                f"{manifest_path}: pseudo-labels were made for a student with {bound[0]}x{bound[1]} output, "
                f"this student's is {target_size[0]}x{target_size[1]}; rerun the pseudolabel stage"
            )
        self.manifest = manifest
        self.store_size: tuple[int, int] = tuple(int(s) for s in manifest["store_size"])  # type: ignore[assignment]
        out = manifest.get("output_size")
        self.output_size: tuple[int, int] | None = None if out is None else tuple(int(s) for s in out)  # type: ignore[assignment]
        entries = manifest["shards"]
        self._paths = [(self.out_dir / e["name"], self.out_dir / e["range_name"]) for e in entries]
        self._starts = np.cumsum([0] + [int(e["count"]) for e in entries])
        if int(self._starts[-1]) != int(manifest["count"]):
            raise CorruptCacheError(f"{manifest_path}: shard counts sum to {self._starts[-1]}, not count {manifest['count']}")
        for (maps_path, range_path), entry in zip(self._paths, entries, strict=True):
            n = int(entry["count"])
            self._check_file(maps_path, entry["sha256"], (n, *self.store_size), np.uint8, verify)
            self._check_file(range_path, entry["range_sha256"], (n, 2), np.float32, verify)
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @staticmethod
    def _check_file(path: Path, sha256: str, shape: tuple[int, ...], dtype: type, verify: bool) -> None:
        if not path.is_file():
            raise CorruptCacheError(f"{path}: listed in {MANIFEST} but missing; rerun the pseudolabel stage")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptCacheError(f"{path}: unreadable or truncated ({exc}); rerun the pseudolabel stage") from exc
        if arr.dtype != dtype or arr.shape != shape:
            raise CorruptCacheError(f"{path}: holds {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} {shape}")
        del arr
        if verify and sha256_file(path) != sha256:
            raise CorruptCacheError(
                f"{path}: sha256 does not match {MANIFEST} (the file changed or is corrupt); rerun the pseudolabel stage"
            )

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        arrays = self._maps.get(s)
        if arrays is None:
            maps_path, range_path = self._paths[s]
            arrays = self._maps[s] = (
                np.load(maps_path, mmap_mode="r", allow_pickle=False),
                np.load(range_path, mmap_mode="r", allow_pickle=False),
            )
        return arrays

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"pseudo-label index {i} out of range for {n} maps in {self.out_dir}")
        i %= n
        s = int(np.searchsorted(self._starts, i, side="right")) - 1
        q, ranges = self._shard(s)
        row = i - int(self._starts[s])
        return dequantize_maps(np.asarray(q[row]), np.asarray(ranges[row]))

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps do not travel to DataLoader workers (pickling one copies its data).
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state


class PseudoDataset(Dataset):
    """Unlabeled images with their cached pseudo-labels, for the student's pseudo pass.

    Items: ``{"image": (3, H, W) float32 [0, 1], "target": (h_out, w_out) float32 [0, 1],
    "index": int}``. The cached map is upsampled bilinearly to ``output_size``; with ``hflip``
    image and map are flipped together (probability 1/2); ``photometric`` augments the image
    only (colour jitter and TrivialAugmentWide restricted to its photometric operations, so the
    map stays aligned; see :mod:`semipkd.data.augment`): the same ``augment_pair`` as the
    labelled :class:`semipkd.data.PreparedDataset`. Randomness is a function of
    ``(seed, epoch, index)``: identical for any number of loader workers.
    """

    def __init__(
        self,
        images_path: str | os.PathLike,
        cache: PseudoLabelCache,
        output_size: Sequence[int],
        *,
        hflip: bool,
        photometric: bool | Sequence[str],
        seed: int,
    ) -> None:

        self.images = PreparedImages(images_path, hflip=False, photometric=False, seed=seed)
        if len(self.images) != len(cache):
            raise ValueError(
                f"{images_path} holds {len(self.images)} images but the pseudo-label cache {cache.out_dir} "
                f"holds {len(cache)} maps; rerun the pseudolabel stage"
            )
        labelled_names = cache.manifest.get("images", {}).get("names_sha256")
        if labelled_names is not None and labelled_names != _names_sha256(self.images.names):
            # The teacher may have labelled its own-resolution copy of the pool: same images, same order.
            raise StaleCacheError(
                f"{images_path}: not the images the pseudo-label cache {cache.out_dir} was made from "
                "(names or order differ); rerun prepare and pseudolabel"
            )
        self.cache = cache
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.hflip, self.photometric, self.seed = bool(hflip), photometric_ops(photometric), seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict[str, Any]:

        i = int(i)
        if i < 0:
            i += len(self)
        # PreparedImages without augmentation gives uint8 / 255 exactly; back to uint8 losslessly
        # for augment_pair, which flips image and maps with one coin and colours the image only.
        image = torch.round(self.images[i]["image"] * 255.0).to(torch.uint8)
        target = torch.from_numpy(self.cache[i])
        if tuple(target.shape) != self.output_size:
            target = F.interpolate(target[None, None], size=self.output_size, mode="bilinear", align_corners=False)[0, 0]
        target = target.clamp_(0.0, 1.0)
        rng = augmentation_rng(self.seed, self.epoch, i) if (self.hflip or self.photometric) else None
        image, (target,) = augment_pair(image, (target,), hflip=self.hflip, photometric=self.photometric, rng=rng)
        return {"image": image, "target": target.contiguous(), "index": i}
