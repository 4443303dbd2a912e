"""Readers of the five benchmarks and of the unlabeled pool, in the layouts of docs/architecture.md.

``open_benchmark(name, root, split)`` finds which layout ``root`` holds, lists and pairs its
files, checks the structure at once (every stimulus has its maps, every map its stimulus, no
stray files) and returns a :class:`BenchmarkSet`: a sequence of :class:`Sample` that decodes
lazily, one sample per ``__getitem__``. Decoding problems (a truncated JPEG, a map of the wrong
size, an empty fixation map) surface in :meth:`BenchmarkSet.validate` and in the prepare step,
which decode every sample once; training reads the prepared cache and never decodes a JPEG.

Layouts read (``<root>`` is the benchmark's folder; see docs/data.md for the full description):

=========  ==================  ====================================================================
benchmark  layout              folders
=========  ==================  ====================================================================
all        repo (the paper's)  ``stimuli/``, ``saliency/``, ``fixations/`` (SALICON: ``.../train``,
                               ``.../val``; CAT2000: ``.../<Category>/``)
salicon    distribution        ``images/{train,val}``, ``maps/{train,val}``, ``fixations/{train,val}``
mit1003    distribution        ``ALLSTIMULI/``, ``ALLFIXATIONMAPS/`` (``*_fixMap.jpg``, ``*_fixPts.jpg``)
cat2000    distribution        ``Stimuli/<Category>/``, ``FIXATIONMAPS/<Category>/``,
                               ``FIXATIONLOCS/<Category>/*.mat`` (``fixLocs``)
osie       distribution        ``stimuli/``, ``eye/fixations.mat`` (points only; density built here)
eyecrowd   distribution        OSIE's layout and ``.mat`` structure (real data only; no generated set)
=========  ==================  ====================================================================

Pairing is by name: a stimulus ``stimuli/<stem>.jpg`` pairs with ``saliency/<stem>.png|.jpg``
(or ``<stem>_fixMap.*``) and ``fixations/<stem>.png|.jpg|.mat`` (or ``<stem>_fixPts.*``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .splits import BENCHMARK_NAMES, split_indices
from .validate import (
    IMAGE_EXTENSIONS,
    DataError,
    check_on_error,
    density_from_fixations,
    is_ignored_name,
    load_mat,
    points_to_fixation_map,
    read_density,
    read_fixation_map,
    read_fixations_mat,
    read_image,
)

__all__ = [
    "BENCHMARK_NAMES",
    "DENSITY_SIGMA_PX",
    "SPLITS",
    "Sample",
    "BenchmarkSet",
    "UnlabeledSample",
    "UnlabeledSet",
    "open_benchmark",
    "open_unlabeled",
    "manifest_row",
]

log = logging.getLogger(__name__)

#: Splits a benchmark can be opened with; ``all`` is train + val in sorted-file order.
SPLITS = ("train", "val", "all")

#: Gaussian sigma of the density map built from fixation points, for layouts that distribute
#: points but no density map, as (sigma in px, at this longer image side in px). OSIE's and
#: EyeCrowd's distributions are such layouts (the same lab, the same format): their authors'
#: code blurs with ``params.eye.radius`` = 24 px at OSIE's 800x600 and 26 px at EyeCrowd's
#: 1024x768, used as the Gaussian's sigma. The sigma scales with the image so that a smaller
#: copy (the generated default) is blurred alike (exactly the authors' px at full size).
DENSITY_SIGMA_PX = {"osie": (24.0, 800), "eyecrowd": (26.0, 1024)}

_DENSITY_SUFFIX = "_fixMap"  # MIT1003 density maps: <stem>_fixMap.jpg
_FIXATION_SUFFIX = "_fixPts"  # MIT1003 binary maps:  <stem>_fixPts.jpg
#: Files known to be shipped by mistake with a distribution; skipped with a log line, not an error.
_KNOWN_EXTRAS = {
    # MIT1003's ALLFIXATIONMAPS holds a duplicate of ..._p1010764_fixPts.jpg without the underscore.
    "i05june05_static_street_boston_p1010764fixPts.jpg",
}


@dataclass(frozen=True, eq=False)
class Sample:
    """One benchmark image with its ground truth, at the image's original size.

    Attributes:
        name: stable name, the stimulus path relative to the stimuli folder without extension
            (``"1001"``; CAT2000 ``"Action/001"``).
        image: uint8 (H, W, 3) RGB.
        density: float32 (H, W) in [0, 1], max-normalised.
        fixations: bool (H, W), True at fixated pixels.
        points: float64 (N, 2) 0-based (x, y) fixation points inside the image, where the format
            has points (SALICON .mat, OSIE); None for formats that store binary maps.
        observers: int32 (N,) observer index of each point, or None.
        notes: conversions or corrections applied while reading (also in the manifest).
    """

    name: str
    image: np.ndarray
    density: np.ndarray
    fixations: np.ndarray
    points: np.ndarray | None = None
    observers: np.ndarray | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class _Entry:
    """The files behind one sample, found at open time (nothing decoded yet)."""

    name: str
    stimulus: Path
    density: Path | None  # None: built from the points
    fixations: Path | None  # None: points held in ``points`` (OSIE distribution)
    points: np.ndarray | None = None  # raw 0-based (x, y), before dropping outside points
    observers: np.ndarray | None = None
    source: Path | None = None  # the file the points come from, for messages
    group: str = ""  # CAT2000 category


@dataclass(frozen=True)
class _Layout:
    kind: str
    stimuli: str  # folder relative to root; "{split}" is replaced for SALICON
    density: str | None
    fixations: str | None
    nested: bool = False  # files are <Category>/<file> (CAT2000)
    points_mat: str | None = None  # single .mat with every image's points (OSIE)


_REPO = _Layout("repo layout", "stimuli", "saliency", "fixations")
_LAYOUTS: dict[str, tuple[_Layout, ...]] = {
    "salicon": (
        _Layout("repo layout", "stimuli/{split}", "saliency/{split}", "fixations/{split}"),
        _Layout("SALICON distribution", "images/{split}", "maps/{split}", "fixations/{split}"),
    ),
    "mit1003": (_REPO, _Layout("MIT1003 distribution", "ALLSTIMULI", "ALLFIXATIONMAPS", "ALLFIXATIONMAPS")),
    "cat2000": (
        _Layout("repo layout", "stimuli", "saliency", "fixations", nested=True),
        _Layout("CAT2000 distribution", "Stimuli", "FIXATIONMAPS", "FIXATIONLOCS", nested=True),
    ),
    "pascal_s": (_REPO,),
    "osie": (_Layout("OSIE distribution", "stimuli", None, None, points_mat="eye/fixations.mat"), _REPO),
    # The same lab's format, read by the same code.
    "eyecrowd": (_Layout("EyeCrowd distribution", "stimuli", None, None, points_mat="eye/fixations.mat"), _REPO),
}


def manifest_row(name: str, split: str, *, height=None, width=None, n_fixations=None, status: str = "ok",
                 reason: str = "") -> dict:
    """One manifest row: ``name, split, height, width, n_fixations, status (ok|skipped), reason``."""
    return {"name": name, "split": split, "height": height, "width": width,
            "n_fixations": n_fixations, "status": status, "reason": reason}


def _raise_problems(where: Path, problems: list[tuple[str, str]]) -> None:
    """Raise one DataError for a list of (file, reason): the first named, the rest summed up."""
    first_file, first_reason = problems[0]
    if len(problems) == 1:
        raise DataError(first_file, first_reason)
    more = "; ".join(f"{f}: {r}" for f, r in problems[1:6])
    tail = f"; ... ({len(problems) - 6} more)" if len(problems) > 6 else ""
    raise DataError(first_file, f"{first_reason}; and {len(problems) - 1} more problems in {where}: {more}{tail}",
                    problems)


def _check_root(root: Path, what: str) -> None:
    if not root.exists():
        raise DataError(root, f"{what} folder does not exist (wrong root?)")
    if not root.is_dir():
        raise DataError(root, f"{what} root is not a folder")


def _scan(folder: Path, nested: bool) -> tuple[list[tuple[str, Path]], int]:
    """Regular files of ``folder`` (``<Category>/<file>`` when nested), sorted by relative path.

    Returns ``(files, n_ignored_deeper)``: ``files`` as (relative posix path, path); hidden
    entries and documentation files are left out; files at other depths are only counted.
    """
    files: list[tuple[str, Path]] = []
    deeper = 0
    want_depth = 2 if nested else 1
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(folder)
        depth = len(rel_dir.parts) + 1
        for fn in filenames:
            if is_ignored_name(fn):
                continue
            if depth != want_depth:
                deeper += 1
                continue
            files.append(((rel_dir / fn).as_posix(), Path(dirpath) / fn))
    files.sort(key=lambda t: t[0])
    return files, deeper


def _strip(rel: str) -> tuple[str, str]:
    """Split ``a/b.jpg`` into (``a/b``, ``.jpg``)."""
    stem, ext = os.path.splitext(rel)
    return stem, ext.lower()


def _index_maps(folder: Path, nested: bool, *, suffix: str, required_suffix: bool, allow_mat: bool,
                role: str, problems: list[tuple[str, str]], shared: bool) -> dict[str, Path]:
    """Map each pairing key (relative stem, ``suffix`` removed) to its map file.

    Files of the wrong type are recorded as stray in ``problems``; two maps with one key too.
    When ``shared`` (MIT1003's distribution keeps both maps in one folder), files without
    ``suffix`` belong to the other role and are left alone here.
    """
    files, deeper = _scan(folder, nested)
    if deeper:
        log.warning("%s: ignored %d files outside the expected folder depth", folder, deeper)
    out: dict[str, Path] = {}
    allowed = IMAGE_EXTENSIONS + ((".mat",) if allow_mat else ())
    for rel, path in files:
        if path.name in _KNOWN_EXTRAS:
            log.info("%s: skipping %s, a known stray file of the distribution", folder, path.name)
            continue
        stem, ext = _strip(rel)
        has_suffix = stem.endswith(suffix)
        if shared and not has_suffix:
            continue  # the other role's file (or a stray one, reported by that role)
        if ext not in allowed:
            problems.append((str(path), f"stray file in the {role} folder: not a map (extension {ext or 'none'!r})"))
            continue
        if required_suffix and not has_suffix:
            problems.append((str(path), f"stray file in the {role} folder: name does not end in {suffix}"))
            continue
        key = stem[: -len(suffix)] if has_suffix else stem
        if key in out:
            problems.append((str(path), f"two {role} maps for {key!r}: {out[key].name} and {path.name}"))
            continue
        out[key] = path
    return out


def _points_mat(mat_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Parse an OSIE-format ``eye/fixations.mat`` (OSIE, EyeCrowd) into {image stem: (points
    0-based (N, 2), observers (N,))}.

    Every fixation of every observer is kept, the first one (near the centre, where the fixation
    cross was) included, as the authors' maps do. An observer record without fixations (EyeCrowd
    has 3 of 8,000) adds no points; such records are counted in a log line.
    """
    mat = load_mat(mat_path)
    if "fixations" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(mat_path, f"no 'fixations' variable (OSIE/EyeCrowd format expected); variables: {found}")
    records = mat["fixations"]
    records = [records] if isinstance(records, dict) else list(np.atleast_1d(records))
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    empty = 0
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "img" not in rec or "subjects" not in rec:
            raise DataError(mat_path, f"fixations entry {i} lacks 'img' / 'subjects'")
        img = str(rec["img"])
        subjects = rec["subjects"]
        subjects = [subjects] if isinstance(subjects, dict) else list(np.atleast_1d(subjects))
        pts, obs = [], []
        for k, sub in enumerate(subjects):
            if not isinstance(sub, dict) or "fix_x" not in sub or "fix_y" not in sub:
                raise DataError(mat_path, f"image {img}: subject {k} lacks fix_x / fix_y")
            x = np.atleast_1d(np.asarray(sub["fix_x"], dtype=np.float64)).ravel()
            y = np.atleast_1d(np.asarray(sub["fix_y"], dtype=np.float64)).ravel()
            if x.shape != y.shape:
                raise DataError(mat_path, f"image {img}: subject {k} has {x.size} fix_x but {y.size} fix_y")
            empty += x.size == 0
            pts.append(np.stack([x, y], axis=1) - 1.0)  # 1-based in the file
            obs.append(np.full(x.size, k, dtype=np.int32))
        stem = os.path.splitext(img)[0]
        if stem in out:
            raise DataError(mat_path, f"image {img} appears twice")
        out[stem] = (np.concatenate(pts) if pts else np.zeros((0, 2)),
                     np.concatenate(obs) if obs else np.zeros(0, np.int32))
    if empty:
        log.info("%s: %d observer records without fixations (they add no points)", mat_path, empty)
    return out


def _find_layout(name: str, root: Path, splits: tuple[str, ...]) -> _Layout:
    """The first layout whose folders all exist under ``root``; else a DataError saying what is missing."""
    partial = []
    for lay in _LAYOUTS[name]:
        needed = []
        for sp in splits:
            needed += [lay.stimuli.format(split=sp)]
            needed += [p.format(split=sp) for p in (lay.density, lay.fixations) if p]
        needed = list(dict.fromkeys(needed))
        missing = [p for p in needed if not (root / p).is_dir()]
        if lay.points_mat and not (root / lay.points_mat).is_file():
            missing.append(lay.points_mat)
        if not missing:
            return lay
        if len(missing) < len(needed) + bool(lay.points_mat):
            partial.append(f"{lay.kind} (missing {', '.join(missing)})")
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
    expected = "; ".join(
        f"{lay.kind}: " + ", ".join(dict.fromkeys(
            [lay.stimuli.format(split=s) + "/" for s in splits]
            + [p.format(split=s) + "/" for s in splits for p in (lay.density, lay.fixations) if p]
            + ([lay.points_mat] if lay.points_mat else [])))
        for lay in _LAYOUTS[name])
    hint = f"; incomplete: {'; '.join(partial)}" if partial else ""
    if (root / name).is_dir():
        hint += f"; did you mean {root / name}?"
    raise DataError(root, f"not a {name} dataset folder: expected {expected}{hint}; found {found or 'nothing'}")


def _list_split(name: str, root: Path, lay: _Layout, folder_split: str) -> tuple[list[_Entry], list[tuple[str, str, str | None]]]:
    """All entries of one folder set, sorted by stimulus path, plus problems as (file, reason, stimulus key)."""
    sdir = root / lay.stimuli.format(split=folder_split)
    files, deeper = _scan(sdir, lay.nested)
    if deeper:
        log.warning("%s: ignored %d files outside the expected folder depth%s", sdir, deeper,
                    " (<Category>/<file>)" if lay.nested else " (files in subfolders)")
    problems: list[tuple[str, str, str | None]] = []
    stimuli: dict[str, Path] = {}
    for rel, path in files:
        stem, ext = _strip(rel)
        if ext not in IMAGE_EXTENSIONS:
            problems.append((str(path), f"stray file in the stimuli folder: not an image (extension {ext or 'none'!r})", None))
        elif stem in stimuli:
            problems.append((str(path), f"two stimuli named {stem!r}: {stimuli[stem].name} and {path.name}", stem))
        else:
            stimuli[stem] = path
    if not stimuli:
        raise DataError(sdir, f"no images ({'/'.join(IMAGE_EXTENSIONS)}) found"
                        + (" in <Category>/ subfolders" if lay.nested else ""))

    entries: list[_Entry] = []
    if lay.points_mat:
        mat_path = root / lay.points_mat
        pts = _points_mat(mat_path)
        for stem, path in stimuli.items():
            if stem not in pts:
                problems.append((str(path), f"no fixations for this stimulus in {mat_path}", stem))
                continue
            p, o = pts[stem]
            entries.append(_Entry(stem, path, None, None, points=p, observers=o, source=mat_path))
        for stem in pts.keys() - stimuli.keys():
            problems.append((str(mat_path), f"fixations for {stem!r} but no stimulus of that name in {sdir}", None))
    else:
        map_problems: list[tuple[str, str]] = []
        ddir = root / lay.density.format(split=folder_split)
        fdir = root / lay.fixations.format(split=folder_split)
        shared = ddir == fdir
        dens = _index_maps(ddir, lay.nested, suffix=_DENSITY_SUFFIX, required_suffix=shared, allow_mat=False,
                           role="density", problems=map_problems, shared=shared)
        fixs = _index_maps(fdir, lay.nested, suffix=_FIXATION_SUFFIX, required_suffix=shared, allow_mat=True,
                           role="fixation", problems=map_problems, shared=shared)
        if shared:  # files with neither suffix in the one maps folder
            for rel, path in _scan(ddir, lay.nested)[0]:
                stem = _strip(rel)[0]
                if path.name not in _KNOWN_EXTRAS and not stem.endswith((_DENSITY_SUFFIX, _FIXATION_SUFFIX)):
                    map_problems.append(
                        (str(path), f"stray file in {ddir.name}: neither *{_DENSITY_SUFFIX} nor *{_FIXATION_SUFFIX}"))
        problems += [(f, r, None) for f, r in map_problems]
        for stem, path in stimuli.items():
            d, f = dens.get(stem), fixs.get(stem)
            if d is None:
                problems.append(
                    (str(path), f"missing density map: no {stem}.png/.jpg (or {stem}{_DENSITY_SUFFIX}.*) in {ddir}", stem))
            if f is None:
                problems.append((str(path), f"missing fixation file: no {stem}.png/.jpg/.mat "
                                 f"(or {stem}{_FIXATION_SUFFIX}.*) in {fdir}", stem))
            if d is not None and f is not None:
                entries.append(_Entry(stem, path, d, f, group=stem.split("/")[0] if lay.nested else ""))
        for role, maps, _folder in (("density map", dens, ddir), ("fixation file", fixs, fdir)):
            for key in sorted(maps.keys() - stimuli.keys()):
                problems.append((str(maps[key]), f"{role} pairs with no stimulus: no {key}.jpg/.jpeg/.png in {sdir}", None))

    # Entries with a problem are dropped later; keep the full sorted stimulus list for the split.
    by_stem = {e.name: e for e in entries}
    ordered = [by_stem.get(stem) or _Entry(stem, path, None, None, group=stem.split("/")[0] if lay.nested else "")
               for stem, path in sorted(stimuli.items(), key=lambda kv: kv[1].relative_to(sdir).as_posix())]
    return ordered, problems


def _check_index(index, n: int, what: str) -> int:
    """``index`` as a non-negative int below ``n`` (negative ones count from the end)."""
    index = int(index)
    if index < 0:
        index += n
    if not 0 <= index < n:
        raise IndexError(f"{what}: index {index} out of range for {n} samples")
    return index


class BenchmarkSet(Sequence):
    """One split of a benchmark: a sequence of :class:`Sample`, decoded on ``__getitem__``.

    Attributes:
        name: benchmark id.
        root: the folder it was read from.
        split: ``train``, ``val`` or ``all``.
        layout: which layout was found (e.g. ``"repo layout"``, ``"OSIE distribution"``).
        sigma: (sigma px, at longer side px) for density maps built from points, or None.
        skipped: (file, reason) of every file left out (``on_error="skip"``), at open time and
            by :meth:`validate`.
    """

    def __init__(self, name: str, root: Path, split: str, layout: str, entries: list[_Entry],
                 skipped: list[tuple[str, str]], sigma: tuple[float, int] | None, skipped_keys: list[str | None] | None = None,
                 *, on_error: str = "raise"):
        self.name = name
        self._on_error = check_on_error(on_error)
        self.root = root
        self.split = split
        self.layout = layout
        self.sigma = sigma
        self._entries = list(entries)
        self.skipped = list(skipped)
        # The stimulus name each open-time skip belongs to (None: a file of no stimulus).
        self._skipped_keys = list(skipped_keys) if skipped_keys is not None else [None] * len(skipped)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return _load(self._entries[_check_index(index, len(self), f"{self.name}/{self.split}")], self.sigma)

    @property
    def names(self) -> list[str]:
        """Sample names in index order."""
        return [e.name for e in self._entries]

    def files(self, index: int) -> dict[str, Path | None]:
        """The files behind sample ``index``: stimulus, density, fixations."""
        e = self._entries[index]
        return {"stimulus": e.stimulus, "density": e.density, "fixations": e.fixations or e.source}

    def skipped_rows(self) -> list[dict]:
        """Manifest rows of the files skipped at open time."""
        rows = []
        for (f, reason), key in zip(self.skipped, self._skipped_keys, strict=True):
            rows.append(manifest_row(key or _rel(f, self.root), self.split, status="skipped", reason=f"{f}: {reason}"))
        return rows

    def record_skip(self, file: str, reason: str, name: str | None = None) -> None:
        """Add ``(file, reason)`` to :attr:`skipped` (sample ``name``, if the file belongs to one)."""
        self.skipped.append((str(file), reason))
        self._skipped_keys.append(name)

    def subset(self, indices: Sequence[int]) -> "BenchmarkSet":
        """The samples at ``indices`` (in that order) as a set of their own; the open-time skips
        stay with it (they are files of the whole split)."""
        entries = [self._entries[_check_index(i, len(self), f"{self.name}/{self.split}")] for i in indices]
        return BenchmarkSet(self.name, self.root, self.split, self.layout, entries, self.skipped, self.sigma,
                            self._skipped_keys, on_error=self._on_error)

    def images_only(self, indices: Sequence[int], prefix: str = "") -> "UnlabeledSet":
        """The stimuli at ``indices`` as an unlabeled pool: only the image files are ever read
        (never a density map or a fixation file); names get ``prefix``."""
        entries = [self._entries[_check_index(i, len(self), f"{self.name}/{self.split}")] for i in indices]
        return UnlabeledSet(self.root, [(prefix + e.name, e.stimulus) for e in entries], [], self._on_error)

    def validate(self, *, on_error: str | None = None, progress: bool = True) -> list[dict]:
        """Decode and check every sample.

        With ``on_error="skip"`` (default: the mode the set was opened with) bad samples are
        removed from the set and added to :attr:`skipped`; with ``"raise"`` the first one raises
        :class:`DataError` naming its file.

        Returns:
            manifest rows (see :func:`manifest_row`), open-time skips first, then one row per sample.
        """
        mode = check_on_error(on_error or self._on_error)
        rows = self.skipped_rows()
        keep = []
        for _i, e in enumerate(tqdm(self._entries, desc=f"validate {self.name}/{self.split}", disable=not progress or None,
                                    mininterval=1.0, leave=False)):
            try:
                s = _load(e, self.sigma)
            except DataError as err:
                if mode == "raise":
                    raise
                self.record_skip(str(err.path), err.reason, e.name)
                rows.append(manifest_row(e.name, self.split, status="skipped", reason=str(err)))
                log.warning("skipping %s/%s %s: %s", self.name, self.split, e.name, err)
                continue
            keep.append(e)
            rows.append(sample_row(s, self.split))
        self._entries = keep
        return rows

    def __repr__(self) -> str:
        return (f"BenchmarkSet({self.name!r}, split={self.split!r}, n={len(self)}, layout={self.layout!r}, "
                f"skipped={len(self.skipped)})")


def _rel(f: str, root: Path) -> str:
    try:
        return Path(f).relative_to(root).as_posix()
    except ValueError:
        return str(f)


def sample_row(s: Sample, split: str) -> dict:
    """Manifest row of a good sample: n_fixations counts points where the format has them,
    fixated pixels otherwise."""
    n_fix = int(len(s.points)) if s.points is not None else int(np.count_nonzero(s.fixations))
    return manifest_row(s.name, split, height=int(s.image.shape[0]), width=int(s.image.shape[1]),
                        n_fixations=n_fix, reason="; ".join(s.notes))


def _same_size(map_path: Path, shape, stimulus: Path, size) -> None:
    if tuple(shape) != tuple(size):
        raise DataError(map_path, f"size {shape[0]}x{shape[1]} (HxW) differs from its stimulus "
                                  f"{stimulus.name} ({size[0]}x{size[1]})")


def _load(e: _Entry, sigma: tuple[float, int] | None) -> Sample:
    """Decode and check one sample; DataError names the file at fault."""
    if e.density is None and e.fixations is None and e.points is None:
        raise DataError(e.stimulus, "stimulus has no maps")  # a problem entry that was not dropped
    image, notes = read_image(e.stimulus)
    notes = list(notes)
    size = image.shape[:2]
    density = None
    if e.density is not None:
        density = read_density(e.density)
        _same_size(e.density, density.shape, e.stimulus, size)
    points = observers = None
    fix = None
    fix_file = e.fixations or e.source
    if e.points is not None:
        raw, raw_obs = e.points, e.observers
    else:
        raw = raw_obs = None
        if e.fixations.suffix.lower() == ".mat":
            m = read_fixations_mat(e.fixations)
            if m["kind"] == "map":
                fix = m["map"]
                _same_size(e.fixations, fix.shape, e.stimulus, size)
            else:
                if m["resolution"] is not None and tuple(m["resolution"]) != tuple(size):
                    r = m["resolution"]
                    raise DataError(e.fixations, f"resolution {r[0]}x{r[1]} differs from its stimulus "
                                                 f"{e.stimulus.name} ({size[0]}x{size[1]})")
                raw, raw_obs = m["points"], m["observers"]
        else:
            fix = read_fixation_map(e.fixations)
            _same_size(e.fixations, fix.shape, e.stimulus, size)
    if raw is not None:
        fix, inside = points_to_fixation_map(raw, size)
        n_out = int(np.count_nonzero(~inside))
        if not inside.any():
            what = f"all {len(raw)} fixations fall outside the image" if len(raw) else "no fixations"
            raise DataError(fix_file, f"{what} (stimulus {e.stimulus.name}, {size[0]}x{size[1]})")
        if n_out:
            notes.append(f"dropped {n_out} of {len(raw)} fixations outside the image")
        points = raw[inside]
        observers = None if raw_obs is None else raw_obs[inside]
    if not fix.any():
        raise DataError(fix_file, f"empty fixation map: no fixated pixel (stimulus {e.stimulus.name})")
    if density is None:
        if sigma is None:
            raise DataError(e.stimulus, "no density map and no sigma to build one")
        sigma_px, at_side = sigma
        density = density_from_fixations(fix, sigma_px * max(fix.shape) / at_side)
    return Sample(e.name, image, density, fix, points, observers, tuple(notes))


def open_benchmark(name: str, root: str | os.PathLike, split: str, *, on_error: str = "raise") -> BenchmarkSet:
    """Open one split of a benchmark.

    Finds the layout under ``root``, lists and pairs the files, applies the paper's split
    (:func:`semipkd.data.split_indices` over the sorted stimulus list; SALICON: its folders) and
    checks the structure: missing, unpaired, duplicate or stray files. Nothing is decoded; call
    :meth:`BenchmarkSet.validate` (or prepare) to decode and check every sample.

    Args:
        name: ``salicon``, ``mit1003``, ``cat2000``, ``pascal_s``, ``osie`` or ``eyecrowd``.
        root: the benchmark's folder (e.g. ``data/mit1003``).
        split: ``train``, ``val`` or ``all``.
        on_error: ``raise`` (first structural problem raises) or ``skip`` (problem samples are
            left out and listed in ``skipped``; the split of the others does not move).

    Raises:
        ValueError: unknown name, split or on_error.
        DataError: wrong root, unrecognised layout, no images, or (``raise``) any structural problem.
    """
    if name not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    check_on_error(on_error)
    root = Path(root)
    _check_root(root, name)

    if name == "salicon":  # split by folders
        folder_splits = ("train", "val") if split == "all" else (split,)
    else:
        folder_splits = ("",)
    lay = _find_layout(name, root, folder_splits)

    entries: list[_Entry] = []
    problems: list[tuple[str, str, str | None]] = []
    for fs in folder_splits:
        ents, probs = _list_split(name, root, lay, fs)
        entries += ents
        problems += probs
    if name != "salicon" and split != "all":
        groups = [e.group for e in entries] if name == "cat2000" else None
        idx = split_indices(name, len(entries), groups=groups)[split]
        entries = [entries[i] for i in idx]
    selected = {e.name for e in entries}
    # Problems of stimuli in other splits are theirs; problems of no stimulus concern every split.
    mine = [(f, r, k) for f, r, k in problems if k is None or k in selected]
    bad = {k for _, _, k in mine if k is not None}
    if mine and on_error == "raise":
        _raise_problems(root, [(f, r) for f, r, _ in mine])
    for f, r, _ in mine:
        log.warning("skipping %s: %s", f, r)
    good = [e for e in entries if e.name not in bad and (e.fixations is not None or e.points is not None)]
    if not good:
        raise DataError(root, f"{name}/{split}: no usable samples left ({len(mine)} problems)")
    sigma = DENSITY_SIGMA_PX.get(name) if lay.points_mat else None
    bset = BenchmarkSet(name, root, split, lay.kind, good, [(f, r) for f, r, _ in mine], sigma,
                        [k for _, _, k in mine], on_error=on_error)
    log.info("%s/%s: %d samples from %s (%s)%s", name, split, len(good), root, lay.kind,
             f", {len(mine)} files skipped" if mine else "")
    return bset


# ---------------------------------------------------------------------------------------------
# Unlabeled pool


@dataclass(frozen=True, eq=False)
class UnlabeledSample:
    """One unlabeled image: ``name`` (path relative to the pool root, no extension), ``image``
    uint8 (H, W, 3) RGB, ``notes`` (colour conversions applied)."""

    name: str
    image: np.ndarray
    notes: tuple[str, ...] = field(default=())


class UnlabeledSet(Sequence):
    """A folder tree of images as a sequence of :class:`UnlabeledSample`, decoded on access."""

    def __init__(self, root: Path, entries: list[tuple[str, Path]], skipped: list[tuple[str, str]], on_error: str):
        self.root = root
        self._entries = list(entries)
        self.skipped = list(skipped)
        self._on_error = on_error

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        name, path = self._entries[_check_index(index, len(self), "unlabeled")]
        image, notes = read_image(path)
        return UnlabeledSample(name, image, notes)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self._entries]

    def path(self, index: int) -> Path:
        return self._entries[index][1]

    def record_skip(self, file: str, reason: str, name: str | None = None) -> None:
        """Add ``(file, reason)`` to :attr:`skipped`."""
        self.skipped.append((str(file), reason))

    def skipped_rows(self) -> list[dict]:
        return [manifest_row(_rel(f, self.root), "all", status="skipped", reason=f"{f}: {r}") for f, r in self.skipped]

    def validate(self, *, on_error: str | None = None, progress: bool = True) -> list[dict]:
        """Decode every image; like :meth:`BenchmarkSet.validate` (bad ones removed when skipping)."""
        mode = check_on_error(on_error or self._on_error)
        rows = self.skipped_rows()
        keep = []
        for _i, (name, path) in enumerate(tqdm(self._entries, desc="validate unlabeled", disable=not progress or None,
                                               mininterval=1.0, leave=False)):
            try:
                image, notes = read_image(path)
            except DataError as err:
                if mode == "raise":
                    raise
                self.record_skip(str(err.path), err.reason, name)
                rows.append(manifest_row(name, "all", status="skipped", reason=str(err)))
                continue
            keep.append((name, path))
            rows.append(manifest_row(name, "all", height=image.shape[0], width=image.shape[1], reason="; ".join(notes)))
        self._entries = keep
        return rows

    def __add__(self, other: "UnlabeledSet") -> "UnlabeledSet":
        """This pool followed by ``other`` (e.g. withheld labelled images); names must stay unique."""
        clash = set(self.names) & set(other.names)
        if clash:
            raise DataError(other.root, f"image names already in the pool {self.root}: {sorted(clash)[:3]}")
        pool = UnlabeledSet(self.root, self._entries + other._entries, self.skipped + other.skipped, self._on_error)
        return pool

    def __repr__(self) -> str:
        return f"UnlabeledSet({str(self.root)!r}, n={len(self)}, skipped={len(self.skipped)})"


def open_unlabeled(root: str | os.PathLike, *, on_error: str = "raise") -> UnlabeledSet:
    """Open a folder tree of ``.jpg/.jpeg/.png`` images (sorted by relative path) as the unlabeled pool.

    Hidden files and folders and documentation files (README, LICENSE, ...) are ignored; any
    other non-image file is a stray file (raise, or skip and list it).

    Raises:
        DataError: wrong root, no images, or (``raise``) a stray or duplicate-named file.
    """
    check_on_error(on_error)
    root = Path(root)
    _check_root(root, "unlabeled pool")
    entries: list[tuple[str, Path]] = []
    problems: list[tuple[str, str]] = []
    seen: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if is_ignored_name(fn):
                continue
            path = Path(dirpath) / fn
            stem, ext = _strip(path.relative_to(root).as_posix())
            if ext not in IMAGE_EXTENSIONS:
                problems.append((str(path), f"stray file in the unlabeled pool: not an image (extension {ext or 'none'!r})"))
            elif stem in seen:
                problems.append((str(path), f"two images named {stem!r}: {seen[stem].name} and {fn}"))
            else:
                seen[stem] = path
                entries.append((stem, path))
    entries.sort(key=lambda t: t[1].relative_to(root).as_posix())
    if not entries:
        raise DataError(root, f"no images ({'/'.join(IMAGE_EXTENSIONS)}) found in this folder tree")
    if problems and on_error == "raise":
        _raise_problems(root, problems)
    for f, r in problems:
        log.warning("skipping %s: %s", f, r)
    log.info("unlabeled pool: %d images under %s%s", len(entries), root,
             f", {len(problems)} files skipped" if problems else "")
    return UnlabeledSet(root, entries, problems, on_error)
