"""Writers of tiny datasets in each on-disk layout, for the semipkd.data tests.

Written with PIL / scipy.io directly (not with semipkd), and returning what was written, so the
tests compare the readers against independently known values. Stimuli are PNG unless a test
asks for JPEG, so decoded pixels are known exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# Pytest collects this module; it holds no tests.


def save_rgb(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8), "RGB").save(path, **kw)
    return path


def save_gray(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8), "L").save(path, **kw)
    return path


def random_sample(rng: np.random.Generator, size=(12, 16), n_fix=5):
    """(image uint8 (H,W,3), density uint8 (H,W) with max 255, fixations bool (H,W) with n_fix)."""
    h, w = size
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    density = rng.integers(0, 200, (h, w), dtype=np.uint8)
    density[rng.integers(h), rng.integers(w)] = 255
    fix = np.zeros((h, w), bool)
    flat = rng.choice(h * w, n_fix, replace=False)
    fix.flat[flat] = True
    return image, density, fix


def write_repo(root: Path, names, *, size=(12, 16), seed=0, stim_ext=".png", density_suffix="", fix_suffix="",
               fix_format="png", nested=False) -> dict:
    """The paper's repo layout: stimuli/, saliency/, fixations/ (CAT2000: <Category>/ below each).

    ``names`` are stems ("a", or "Cat/a" when nested). ``fix_format``: png, or mat (CAT2000
    fixLocs). Returns {name: (image, density_uint8, fixations_bool)}.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        image, dens, fix = random_sample(rng, size)
        save_rgb(root / "stimuli" / f"{name}{stim_ext}", image, **({"quality": 95} if stim_ext != ".png" else {}))
        save_gray(root / "saliency" / f"{name}{density_suffix}.png", dens)
        if fix_format == "png":
            save_gray(root / "fixations" / f"{name}{fix_suffix}.png", fix.astype(np.uint8) * 255)
        else:
            p = root / "fixations" / f"{name}.mat"
            p.parent.mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(p, {"fixLocs": fix.astype(np.float64)})
        out[name] = (image, dens, fix)
    return out


def salicon_mat(path: Path, observers: list[np.ndarray], resolution=(12, 16), image_name="x") -> None:
    """SALICON fixation file: ``gaze`` struct array (one per observer) with 1-based (x, y)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dt = [("location", object), ("timestamp", object), ("fixations", object)]
    gaze = np.zeros((len(observers), 1), dtype=dt)
    for k, pts in enumerate(observers):
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        gaze[k, 0] = (pts.copy(), np.arange(len(pts), dtype=np.float64)[:, None], pts)
    scipy.io.savemat(path, {"gaze": gaze, "resolution": np.array([list(resolution)], np.float64), "image": image_name})


def write_salicon(root: Path, n_train=3, n_val=2, *, size=(12, 16), seed=0, layout="repo") -> dict:
    """SALICON with .mat fixations, in the repo layout (stimuli/saliency/fixations/<split>/) or the
    distribution's (images/maps/fixations/<split>/). Returns {split: {name: (image, density, points0, fix)}}."""
    rng = np.random.default_rng(seed)
    img_dir, map_dir = ("stimuli", "saliency") if layout == "repo" else ("images", "maps")
    out: dict = {}
    h, w = size
    for split, n in (("train", n_train), ("val", n_val)):
        out[split] = {}
        for i in range(n):
            name = f"COCO_{split}2014_{i:012d}"
            image, dens, _ = random_sample(rng, size)
            observers = [np.stack([rng.integers(1, w + 1, 3), rng.integers(1, h + 1, 3)], 1).astype(np.float64) for _ in range(4)]
            save_rgb(root / img_dir / split / f"{name}.jpg", image, quality=95)
            save_gray(root / map_dir / split / f"{name}.png", dens)
            salicon_mat(root / "fixations" / split / f"{name}.mat", observers, size, name)
            pts0 = np.concatenate(observers) - 1
            fix = np.zeros(size, bool)
            fix[pts0[:, 1].astype(int), pts0[:, 0].astype(int)] = True
            out[split][name] = (image, dens, pts0, fix)
    return out


def osie_mat(path: Path, records: list[tuple[str, list[tuple[np.ndarray, np.ndarray]]]]) -> None:
    """OSIE's eye/fixations.mat as its authors ship it: a cell array (n x 1) of structs with
    ``img`` and ``subjects`` (cell, one struct per subject: fix_x, fix_y 1-based, fix_duration)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = np.empty((len(records), 1), dtype=object)
    for i, (img, subjects) in enumerate(records):
        subj = np.empty((len(subjects), 1), dtype=object)
        for k, (x, y) in enumerate(subjects):
            subj[k, 0] = {"fix_x": np.asarray(x, np.float64)[None, :], "fix_y": np.asarray(y, np.float64)[None, :],
                          "fix_duration": np.full((1, len(x)), 200, np.uint16)}
        cells[i, 0] = {"img": img, "subjects": subj}
    scipy.io.savemat(path, {"fixations": cells})


def write_osie(root: Path, n=6, *, size=(12, 16), seed=0, n_subjects=3, first_id=1001) -> dict:
    """OSIE distribution: stimuli/<id>.jpg (PNG bytes would not match the name; JPEG used) and
    eye/fixations.mat. Returns {name: (points 1-based (N, 2) as written, observers (N,))}."""
    rng = np.random.default_rng(seed)
    h, w = size
    records, out = [], {}
    for i in range(n):
        name = str(first_id + i)
        save_rgb(root / "stimuli" / f"{name}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), quality=95)
        subjects, pts, obs = [], [], []
        for k in range(n_subjects):
            x = rng.uniform(1, w, 3).round(1)
            y = rng.uniform(1, h, 3).round(1)
            subjects.append((x, y))
            pts.append(np.stack([x, y], 1))
            obs.append(np.full(3, k))
        records.append((f"{name}.jpg", subjects))
        out[name] = (np.concatenate(pts), np.concatenate(obs))
    osie_mat(root / "eye" / "fixations.mat", records)
    return out


def write_mit1003_distribution(root: Path, names, *, size=(12, 16), seed=0) -> dict:
    """MIT1003 as distributed: ALLSTIMULI/<stem>.jpeg, ALLFIXATIONMAPS/<stem>_fixMap.jpg and _fixPts.jpg."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        image, dens, fix = random_sample(rng, size)
        save_rgb(root / "ALLSTIMULI" / f"{name}.jpeg", image, quality=95)
        save_gray(root / "ALLFIXATIONMAPS" / f"{name}_fixMap.jpg", dens, quality=95)
        save_gray(root / "ALLFIXATIONMAPS" / f"{name}_fixPts.jpg", fix.astype(np.uint8) * 255, quality=95)
        out[name] = (image, dens, fix)
    return out


def write_cat2000_distribution(root: Path, categories, per_category, *, size=(12, 16), seed=0) -> dict:
    """CAT2000's trainSet: Stimuli/<Cat>/<i>.jpg, FIXATIONMAPS/<Cat>/<i>.jpg, FIXATIONLOCS/<Cat>/<i>.mat (fixLocs)."""
    rng = np.random.default_rng(seed)
    out = {}
    for cat in categories:
        for i in range(1, per_category + 1):
            name = f"{cat}/{i:03d}"
            image, dens, fix = random_sample(rng, size)
            save_rgb(root / "Stimuli" / f"{name}.jpg", image, quality=95)
            save_gray(root / "FIXATIONMAPS" / f"{name}.jpg", dens, quality=95)
            p = root / "FIXATIONLOCS" / f"{name}.mat"
            p.parent.mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(p, {"fixLocs": fix.astype(np.uint8)})
            out[name] = (image, dens, fix)
    return out


def write_pool(root: Path, rel_names, *, size=(10, 14), seed=0) -> dict:
    """Unlabeled pool: PNG images at the given relative stems (subfolders allowed)."""
    rng = np.random.default_rng(seed)
    out = {}
    for rel in rel_names:
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        save_rgb(root / f"{rel}.png", img)
        out[rel] = img
    return out
