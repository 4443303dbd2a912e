"""The prepared cache: benchmarks and the unlabeled pool decoded once, resized, memory-mappable.

Format (docs/architecture.md, "Prepared cache"), one folder per split:

``images.npy``     uint8 (N, H_in, W_in, 3) RGB at the input size
``density.npy``    uint8 (N, H_out, W_out), density = value / 255, max-normalised before quantising
``fixations.npy``  uint8 (N, H_out, ceil(W_out / 8)), ``np.packbits(fixation_map, axis=-1)``
``meta.json``      ``{"version": 1, "name", "split", "count", "input_size", "output_size",
                   "names", "original_sizes"}``

The unlabeled pool (``<out>/all/``) has ``images.npy`` and ``meta.json`` (``output_size``: null).

Writing: every split is written into a temporary folder beside its destination and renamed into
place only when all requested splits are complete, so an interrupted or failed prepare leaves
the previous cache untouched. Rows are streamed to the ``.npy`` files one sample at a time
(the header is rewritten with the final count at the end; numpy reserves room for that), so
memory stays flat however many images there are. The output depends only on the input files
and the arguments: rerunning prepare on unchanged data writes byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..io import atomic_dir
from .augment import augment_pair, augmentation_rng, photometric_ops
from .benchmarks import BenchmarkSet, manifest_row, open_benchmark, open_unlabeled, sample_row
from .resize import check_size, rescale_fixations, resize_density, resize_image
from .splits import labelled_subset
from .validate import DataError, check_on_error

__all__ = [
    "CACHE_VERSION",
    "prepare_benchmark",
    "prepare_unlabeled",
    "read_meta",
    "PreparedDataset",
    "PreparedImages",
    "summarize_rows",
]

log = logging.getLogger(__name__)

#: Version written to meta.json; readers refuse other versions.
CACHE_VERSION = 1


class _NpyRowWriter:
    """Append fixed-shape rows to a .npy file; the header's first dim is set on :meth:`close`."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype=np.uint8):
        self.path = path
        self.row_shape = tuple(int(v) for v in row_shape)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._fh = open(path, "wb")
        self._write_header(0)
        self._data_offset = self._fh.tell()

    def _write_header(self, n: int) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (n,) + self.row_shape}
        np.lib.format.write_array_header_1_0(self._fh, header)

    def append(self, row: np.ndarray) -> None:
        if row.shape != self.row_shape or row.dtype != self.dtype:
            raise ValueError(f"{self.path.name}: row {row.dtype} {row.shape} != {self.dtype} {self.row_shape}")
        self._fh.write(np.ascontiguousarray(row).tobytes())
        self.count += 1

    def close(self) -> None:
        self._fh.seek(0)
        # numpy pads the header so the first dimension can grow to 21 digits in place.
        self._write_header(self.count)
        if self._fh.tell() != self._data_offset:
            raise RuntimeError(f"{self.path}: .npy header changed length on rewrite")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()


def _write_meta(path: Path, meta: dict) -> None:
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


#: The prepared caches: ``prepare`` writes them, the training and labelling stages read them.
PREPARED = Path("data/prepared")


def prepared_root(prepare, *, teacher: bool = False) -> Path:
    """Where the prepared labelled set and pool live: ``data/prepared``, or for a teacher at its
    own resolution (``prepare.teacher_input_size``, a :class:`semipkd.config.PrepareConfig`)
    ``data/prepared/teacher``."""
    return PREPARED / "teacher" if teacher and prepare.teacher_has_own_size else PREPARED


# -- per-sample work, run in the main process or in a pool of workers --------------------------

_WORKER_STATE: dict = {}


def _init_worker(source, input_size, output_size) -> None:
    _WORKER_STATE.update(source=source, input_size=input_size, output_size=output_size)


def _process(index: int):
    """Decode, check and resize sample ``index`` of the worker's source.

    Returns ``(index, arrays or None, row)``; errors are returned, not raised, so the parent
    decides (raise or skip) and the error names the file either way.
    """
    src = _WORKER_STATE["source"]
    try:
        if isinstance(src, BenchmarkSet):
            s = src[index]
            row = sample_row(s, src.split)
            img = resize_image(s.image, _WORKER_STATE["input_size"])
            dens = resize_density(s.density, _WORKER_STATE["output_size"])
            dens_u8 = np.rint(np.clip(dens, 0.0, 1.0) * 255.0).astype(np.uint8)
            fix = np.packbits(rescale_fixations(s.fixations, _WORKER_STATE["output_size"]), axis=-1)
            return index, (img, dens_u8, fix), row
        s = src[index]
        row = manifest_row(s.name, "all", height=int(s.image.shape[0]), width=int(s.image.shape[1]),
                           reason="; ".join(s.notes))
        return index, (resize_image(s.image, _WORKER_STATE["input_size"]),), row
    except DataError as err:
        return index, None, (str(err.path), err.reason, str(err))


def _results(source, input_size, output_size, num_workers: int) -> Iterator:
    """Yield ``_process(i)`` for every sample, in index order (deterministic output)."""
    n = len(source)
    if num_workers <= 0:
        _init_worker(source, input_size, output_size)
        try:
            for i in range(n):
                yield _process(i)
        finally:
            _WORKER_STATE.clear()
        return
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(source, input_size, output_size)) as pool:
        yield from pool.imap(_process, range(n), chunksize=4)


def _write_split(source, dest: Path, *, kind: str, split: str, name: str, input_size, output_size,
                 on_error: str, num_workers: int, progress: bool) -> list[dict]:
    """Stream one split into ``dest`` (an empty folder). Returns its manifest rows."""
    hi, wi = input_size
    writers = {"images": _NpyRowWriter(dest / "images.npy", (hi, wi, 3))}
    if kind == "benchmark":
        ho, wo = output_size
        writers["density"] = _NpyRowWriter(dest / "density.npy", (ho, wo))
        writers["fixations"] = _NpyRowWriter(dest / "fixations.npy", (ho, math.ceil(wo / 8)))
    rows: list[dict] = []
    names: list[str] = []
    sizes: list[list[int]] = []
    try:
        bar = tqdm(total=len(source), desc=f"prepare {name}/{split}", unit="img", disable=not progress or None,
                   mininterval=1.0)
        with bar:
            for index, arrays, row in _results(source, input_size, output_size, num_workers):
                bar.update(1)
                sample_name = source.names[index]
                if arrays is None:
                    path, reason, message = row
                    if on_error == "raise":
                        raise DataError(path, reason)
                    log.warning("skipping %s/%s %s: %s", name, split, sample_name, message)
                    source.record_skip(path, reason, sample_name)
                    rows.append(manifest_row(sample_name, split, status="skipped", reason=message))
                    continue
                for w, a in zip(writers.values(), arrays, strict=True):
                    w.append(a)
                rows.append(row)
                names.append(sample_name)
                sizes.append([row["height"], row["width"]])
        if not names:
            raise DataError(source.root, f"{name}/{split}: no usable samples (all {len(source)} were skipped)")
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    meta = {"version": CACHE_VERSION, "name": name, "split": split, "count": len(names),
            "input_size": [hi, wi], "output_size": list(output_size) if output_size else None,
            "names": names, "original_sizes": sizes}
    _write_meta(dest / "meta.json", meta)
    return rows


def summarize_rows(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Counts of manifest rows per split and status, e.g. ``{"train": {"ok": 9, "skipped": 1}}``."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        d = out.setdefault(str(r["split"]), {})
        d[r["status"]] = d.get(r["status"], 0) + 1
    return out


def _log_counts(what: str, rows: Sequence[dict]) -> None:
    for split, c in sorted(summarize_rows(rows).items()):
        log.info("%s/%s: %d ok, %d skipped", what, split, c.get("ok", 0), c.get("skipped", 0))


def open_labelled_train(name: str, root, *, subset: tuple[float, int] | None, on_error: str = "raise"):
    """The train split of labelled set ``name`` and, with ``subset=(size, seed)``, the seeded
    subset kept (:func:`semipkd.data.splits.labelled_subset`): ``(kept BenchmarkSet, withheld
    UnlabeledSet or None)``. The withheld stimuli are an image pool named ``<name>/train/<image>``
    whose label files are never read."""
    train = open_benchmark(name, root, "train", on_error=on_error)
    if subset is None:
        return train, None
    kept, withheld = labelled_subset(len(train), subset[0], subset[1])
    log.info("%s/train: a labelled subset of %d of %d images (seed %d); %d withheld", name, len(kept), len(train),
             subset[1], len(withheld))
    return train.subset(kept), train.images_only(withheld, prefix=f"{name}/train/")


def prepare_benchmark(name: str, root, out_dir, *, input_size, output_size, splits: Sequence[str] = ("train", "val"),
                      on_error: str = "raise", num_workers: int = 0, progress: bool = True,
                      train=None) -> list[dict]:
    """Validate every sample of a benchmark and write its prepared cache.

    Every requested split is opened (structure checked) before anything is decoded, then each
    sample is decoded, checked (image decodes, maps exist and match its size, at least one
    fixation), resized (:mod:`semipkd.data.resize`) and streamed to ``out_dir/<split>/``.

    Args:
        name: benchmark id.
        root: the benchmark's folder.
        out_dir: e.g. ``data/prepared/mit1003``; ``<split>/`` folders are replaced atomically.
        input_size: (H, W) of the cached images.
        output_size: (H, W) of the cached density and fixation maps.
        splits: which splits to write (``train``, ``val``, ``all``).
        on_error: ``raise`` at the first bad sample, or ``skip`` it (logged, counted, listed).
        num_workers: decode in this many processes (0: in this process). Output is identical.
        progress: show a tqdm bar (quiet anyway when not on a terminal).
        train: an already opened ``train`` split to write instead of opening it, e.g. the kept
            labelled subset of :func:`open_labelled_train` (opened once by the caller and shared by
            every prepared copy; the withheld images are not written here).

    Returns:
        manifest rows (``name, split, height, width, n_fixations, status, reason``), one per
        stimulus and one per skipped stray/unpaired file.

    Raises:
        DataError: the first bad file (``raise``), or a split left with no usable sample.
    """
    check_on_error(on_error)
    input_size = check_size(input_size, "input_size")
    output_size = check_size(output_size, "output_size")
    if not splits or len(set(splits)) != len(splits):
        raise ValueError(f"splits must be distinct and non-empty, got {splits!r}")
    out_dir = Path(out_dir)
    if train is not None and "train" not in splits:
        raise ValueError(f"prepare_benchmark: a train set was given but splits are {splits!r}")
    sets = {sp: train if sp == "train" and train is not None else open_benchmark(name, root, sp, on_error=on_error)
            for sp in splits}
    rows: list[dict] = []
    reported: set[str] = set()
    with contextlib.ExitStack() as stack:
        for sp, bset in sets.items():
            # Files of no stimulus (stray, unpaired) are listed by every split; report them once.
            for row, (f, _) in zip(bset.skipped_rows(), bset.skipped, strict=True):
                if f not in reported:
                    reported.add(f)
                    rows.append(row)
            tmp = stack.enter_context(atomic_dir(out_dir / sp))
            rows += _write_split(bset, tmp, kind="benchmark", split=sp, name=name, input_size=input_size,
                                 output_size=output_size, on_error=on_error, num_workers=num_workers,
                                 progress=progress)
    _log_counts(name, rows)
    return rows


def prepare_unlabeled(root, out_dir, *, input_size, on_error: str = "raise", num_workers: int = 0,
                      progress: bool = True, extra=None) -> list[dict]:
    """Validate every image of the unlabeled pool and write ``out_dir/all/{images.npy, meta.json}``.

    ``extra``: more images appended after the pool's own (an ``UnlabeledSet``, e.g. the withheld
    labelled images of :func:`open_labelled_train`).

    Same guarantees as :func:`prepare_benchmark` (atomic, streamed with flat memory,
    deterministic, tqdm progress). Rows have ``split`` = ``all`` and ``n_fixations`` = None.
    """
    check_on_error(on_error)
    input_size = check_size(input_size, "input_size")
    pool = open_unlabeled(root, on_error=on_error)
    if extra is not None:
        log.info("unlabeled pool: %d images from %s plus %d withheld labelled images", len(pool), root, len(extra))
        pool = pool + extra
    rows = pool.skipped_rows()
    with atomic_dir(Path(out_dir) / "all") as tmp:
        rows += _write_split(pool, tmp, kind="unlabeled", split="all", name="unlabeled", input_size=input_size,
                             output_size=None, on_error=on_error, num_workers=num_workers, progress=progress)
    _log_counts("unlabeled", rows)
    return rows


# -- reading the cache --------------------------------------------------------------------------


def read_meta(path) -> dict:
    """Read and check ``<path>/meta.json`` of a prepared split; DataError says what is wrong."""
    path = Path(path)
    mpath = path / "meta.json"
    if not path.is_dir():
        raise DataError(path, "prepared split folder does not exist; run the prepare stage")
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(mpath, "missing; the prepared split is incomplete, run prepare again") from None
    except json.JSONDecodeError as exc:
        raise DataError(mpath, f"not valid JSON ({exc})") from None
    if meta.get("version") != CACHE_VERSION:
        raise DataError(mpath, f"cache version {meta.get('version')!r}, this code reads {CACHE_VERSION}; run prepare again")
    for key in ("name", "split", "count", "input_size", "names", "original_sizes"):
        if key not in meta:
            raise DataError(mpath, f"missing key {key!r}")
    if len(meta["names"]) != meta["count"] or len(meta["original_sizes"]) != meta["count"]:
        raise DataError(mpath, "names / original_sizes do not match count")
    return meta


def _check_npy(path: Path, shape: tuple[int, ...]) -> None:
    """Check a cached array's header (dtype uint8, expected shape) without reading its data."""
    if not path.is_file():
        raise DataError(path, "missing; the prepared split is incomplete, run prepare again")
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            hdr_shape, fortran, dtype = reader(fh)
        except Exception as exc:
            raise DataError(path, f"not a valid .npy file ({exc})") from None
        offset = fh.tell()
    if dtype != np.uint8 or fortran or tuple(hdr_shape) != shape:
        raise DataError(path, f"holds {dtype} {tuple(hdr_shape)}, expected uint8 {shape}")
    expected = offset + int(np.prod(shape))
    if path.stat().st_size != expected:
        raise DataError(path, f"file is {path.stat().st_size} bytes, expected {expected} (truncated?)")


class _PreparedBase(Dataset):
    """Shared reading logic: meta check on construction, memory maps opened lazily per process."""

    _arrays_needed: tuple[str, ...] = ("images",)

    def __init__(self, path, *, hflip: bool = False, photometric: bool | Sequence[str] = False, seed: int = 0):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.hflip = bool(hflip)
        self.photometric = photometric_ops(photometric)
        self.seed = int(seed)
        self.epoch = 0
        n = self.meta["count"]
        hi, wi = self.meta["input_size"]
        shapes = {"images": (n, hi, wi, 3)}
        if "density" in self._arrays_needed:
            if not self.meta.get("output_size"):
                raise DataError(self.path / "meta.json", "no output_size: this is not a labelled split")
            ho, wo = self.meta["output_size"]
            shapes["density"] = (n, ho, wo)
            shapes["fixations"] = (n, ho, math.ceil(wo / 8))
        for key, shape in shapes.items():
            _check_npy(self.path / f"{key}.npy", shape)
        self._arrays: dict[str, np.ndarray] | None = None

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {k: np.load(self.path / f"{k}.npy", mmap_mode="r") for k in self._arrays_needed}
        return self._arrays

    def __getstate__(self):
        # Memory maps are reopened in each worker rather than pickled (pickling copies the data).
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def names(self) -> list[str]:
        return list(self.meta["names"])

    @property
    def original_sizes(self) -> list[tuple[int, int]]:
        return [tuple(s) for s in self.meta["original_sizes"]]

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating; workers are re-created
        each epoch unless ``persistent_workers`` is set, and then they would keep the old epoch)."""
        self.epoch = int(epoch)

    def _index(self, index) -> int:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: index {index} out of range for {len(self)} samples")
        return index

    def _rng(self, index: int):
        return augmentation_rng(self.seed, self.epoch, index) if (self.hflip or self.photometric) else None


class PreparedDataset(_PreparedBase):
    """A prepared labelled split as a torch Dataset.

    Item ``i`` is ``{"image": float32 (3, H_in, W_in) in [0, 1], "density": float32 (H_out, W_out)
    in [0, 1], "fixations": float32 (H_out, W_out) in {0, 1}, "index": i}``. With ``hflip`` the
    image and both maps are flipped together (probability 1/2); with ``photometric`` the image
    gets colour augmentation (:mod:`semipkd.data.augment`). The draws depend only on
    ``(seed, epoch, index)``.
    """

    _arrays_needed = ("images", "density", "fixations")

    def __getitem__(self, index) -> dict:
        i = self._index(index)
        a = self._open()
        wo = self.meta["output_size"][1]
        image = torch.from_numpy(np.ascontiguousarray(a["images"][i].transpose(2, 0, 1)))  # (3, H, W) copy
        density = torch.from_numpy(a["density"][i].astype(np.float32) / np.float32(255.0))
        fix = torch.from_numpy(np.unpackbits(a["fixations"][i], axis=-1, count=wo).astype(np.float32))
        image, (density, fix) = augment_pair(image, (density, fix), hflip=self.hflip, photometric=self.photometric,
                                             rng=self._rng(i))
        return {"image": image, "density": density.contiguous(), "fixations": fix.contiguous(), "index": i}


class PreparedImages(_PreparedBase):
    """The prepared unlabeled pool (or the images of any prepared split) as a torch Dataset.

    Item ``i`` is ``{"image": float32 (3, H_in, W_in) in [0, 1], "index": i}``, augmented like
    :class:`PreparedDataset` when asked.
    """

    def image_uint8(self, index) -> torch.Tensor:
        """Row ``index`` as stored: uint8 (3, H_in, W_in), no augmentation (e.g. to pass to
        :func:`semipkd.data.augment_pair` together with a cached map)."""
        return torch.from_numpy(np.ascontiguousarray(self._open()["images"][self._index(index)].transpose(2, 0, 1)))

    def __getitem__(self, index) -> dict:
        i = self._index(index)
        image = self.image_uint8(i)
        image, _ = augment_pair(image, (), hflip=self.hflip, photometric=self.photometric, rng=self._rng(i))
        return {"image": image, "index": i}
