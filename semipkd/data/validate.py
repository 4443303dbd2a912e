"""Decoding and checking of dataset files: images, density maps, fixation maps, ``.mat`` gaze data.

Every function here either returns arrays in the package's conventions or raises
:class:`DataError`, whose message starts with the offending file and says what is wrong. Readers
(:mod:`semipkd.data.benchmarks`) and the prepare step call these at open / prepare time, so a
broken file is reported before training starts, never from inside a DataLoader worker.

Conventions (docs/architecture.md): images uint8 (H, W, 3) RGB; density float32 (H, W) in
[0, 1], max-normalised; fixation maps bool (H, W); points float64 (N, 2) 0-based (x, y).

Colour handling of stimuli, decided here once (the paper's loaders call PIL's
``convert("RGB")`` on everything, so these images are part of the published splits and are
converted, not dropped; each conversion is recorded as a note that ends up in the manifest):

* grayscale (``L``, ``1``, ``LA``): the gray channel is replicated into R, G and B;
* CMYK (JPEG): converted by PIL (no colour profile, as the paper);
* 16-bit (``I;16`` grayscale PNG): rounded to 8 bits, ``round(v / 257)``, then replicated;
  16-bit RGB PNGs are read by PIL as 8-bit RGB (high byte), unchanged here;
* RGBA / palette with transparency: accepted when every pixel is opaque (alpha dropped);
  an image with transparent pixels is an error, since what the observers saw is undefined.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import scipy.io

from semipkd import names
from semipkd.errors import SemipkdError

__all__ = [
    "DataError",
    "ON_ERROR",
    "IMAGE_EXTENSIONS",
    "check_on_error",
    "is_ignored_name",
    "load_mat",
    "read_image",
    "read_gray",
    "read_density",
    "read_fixation_map",
    "read_fixations_mat",
    "points_to_fixation_map",
    "density_from_fixations",
]


#: Accepted values of ``on_error``: stop at the first bad sample, or skip it and count it.
ON_ERROR = names.ON_ERROR
#: File extensions read as images (case-insensitive), stimuli and maps alike.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Names (case-insensitive prefixes) of documentation files that dataset folders ship with; they
#: are ignored without a warning. Anything else that is not an image is a stray file.
_DOC_PREFIXES = ("readme", "license", "licence", "copying", "citation", "notice")


class DataError(SemipkdError, ValueError):
    """A dataset file (or folder) that cannot be used.

    Attributes:
        path: the offending file or folder.
        reason: what is wrong with it, in words.
        problems: for a folder-level error that sums up several files, the list of
            ``(file, reason)`` pairs; empty otherwise.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, problems: list[tuple[str, str]] | None = None):
        self.path = None if path is None else Path(path)
        self.reason = reason
        self.problems = list(problems or [])
        super().__init__(f"{path}: {reason}" if path is not None else reason)


def check_on_error(on_error: str) -> str:
    """Return ``on_error`` if it is ``"raise"`` or ``"skip"``; otherwise raise ValueError."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, got {on_error!r}")
    return on_error


def is_ignored_name(name: str) -> bool:
    """True for hidden files (``.DS_Store``, ``._x.jpg``) and documentation (README, LICENSE, ...)."""
    lower = name.lower()
    return name.startswith(".") or lower.startswith(_DOC_PREFIXES) or lower == "thumbs.db"


def _open_pil(path: Path):
    """Open and fully decode ``path`` with PIL; map every failure to a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(path, "file does not exist" if not path.exists() else "is not a regular file")
    try:
        # A decompression-bomb warning is PIL's; the image is still read, we do not silence it.
        im = Image.open(path)
        im.load()  # decodes now: a truncated JPEG raises here, not later in a worker
        return im
    except UnidentifiedImageError:
        raise DataError(path, "not a decodable image (unknown format or corrupt header)") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error ...
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            raise DataError(path, f"truncated image ({msg})") from None
        raise DataError(path, f"corrupt image ({type(exc).__name__}: {msg})") from None


def _to_uint8_gray(arr: np.ndarray, path: Path) -> np.ndarray:
    """Bring a 16/32-bit integer gray array to uint8 by ``round(v / 257)`` (65535 -> 255)."""
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.int64)
    if a.min(initial=0) < 0 or a.max(initial=0) > 65535:
        raise DataError(path, f"integer image with values outside 0..65535 ({a.min()}..{a.max()})")
    return ((a * 2 + 257) // 514).astype(np.uint8)  # round half up of v / 257


def load_mat(path: str | os.PathLike) -> dict:
    """Read a MATLAB (v5/v7) ``.mat`` file with ``simplify_cells``: the one ``.mat`` reader.

    scipy's warnings on odd-but-readable headers are silenced; a missing, HDF5 (v7.3) or unreadable
    file raises :class:`DataError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file does not exist")
    try:
        with warnings.catch_warnings():
            # scipy warns on some odd-but-readable headers; an unreadable file still raises below.
            warnings.simplefilter("ignore", scipy.io.matlab.MatReadWarning)
            return scipy.io.loadmat(path, simplify_cells=True)
    except NotImplementedError:
        raise DataError(path, "MATLAB v7.3 (HDF5) .mat files are not supported; save it with -v7") from None
    except Exception as exc:
        raise DataError(path, f"cannot read .mat file ({type(exc).__name__}: {exc})") from None


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read a stimulus as RGB, upright (EXIF orientation applied).

    Args:
        path: a .jpg/.jpeg/.png file.

    Returns:
        ``(image, notes)``: image uint8 (H, W, 3) RGB, C-contiguous; notes, a tuple of strings
        describing any orientation or colour conversion applied (empty for plain 8-bit RGB).

    Raises:
        DataError: missing, truncated, corrupt, transparent or of an unsupported mode.
    """
    from PIL import ImageOps

    path = Path(path)
    im = _open_pil(path)
    # EXIF orientation applied, as viewers, cameras' previews and cv2.imread show the photo; the
    # one orientation policy of every image reader (predict reads through this function too).
    # Noted, because a dataset's maps may have been made on the stored (unrotated) pixels: a
    # non-square one then fails the size check against its maps; a square one shows in the notes.
    orientation = im.getexif().get(0x0112, 1)
    ImageOps.exif_transpose(im, in_place=True)
    mode = im.mode
    notes: tuple[str, ...] = ()
    try:
        if mode == "RGB":
            arr = np.asarray(im, dtype=np.uint8)
        elif mode in ("L", "1"):
            arr = np.repeat(np.asarray(im.convert("L"), dtype=np.uint8)[:, :, None], 3, axis=2)
            notes = ("grayscale converted to RGB",)
        elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            gray = _to_uint8_gray(np.asarray(im), path)
            arr = np.repeat(gray[:, :, None], 3, axis=2)
            notes = (f"16-bit grayscale ({mode}) converted to 8-bit RGB",)
        elif mode == "CMYK":
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            notes = ("CMYK converted to RGB",)
        elif mode in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
            rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
            n_transparent = int(np.count_nonzero(rgba[:, :, 3] < 255))
            if n_transparent:
                raise DataError(
                    path,
                    f"image has {n_transparent} transparent pixels (mode {mode}); what the observers "
                    "saw is undefined, flatten it onto its display background first",
                )
            arr = rgba[:, :, :3]
            if mode != "P":
                notes = (f"opaque alpha channel dropped ({mode})",)
            if mode in ("LA", "La"):
                notes = ("grayscale converted to RGB, opaque alpha dropped",)
        else:
            raise DataError(path, f"unsupported image mode {mode!r} (expected RGB, grayscale, CMYK, RGBA or 16-bit gray)")
    finally:
        im.close()
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(path, f"decoded to an unexpected shape {arr.shape}")
    if orientation in (2, 3, 4, 5, 6, 7, 8):  # the values exif_transpose acts on
        notes = (f"EXIF orientation {orientation} applied",) + notes
    return np.ascontiguousarray(arr), notes


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Read a map image (density or binary fixation map) as float64 (H, W) in [0, 1].

    8-bit values are divided by 255, 16-bit by 65535. Colour maps are reduced to luma by PIL's
    ``convert("L")`` (the paper's loaders do the same); alpha is ignored.
    """
    path = Path(path)
    im = _open_pil(path)
    try:
        mode = im.mode
        if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            a = np.asarray(im).astype(np.int64)
            if a.min(initial=0) < 0 or a.max(initial=0) > 65535:
                raise DataError(path, f"integer map with values outside 0..65535 ({a.min()}..{a.max()})")
            return a / 65535.0
        if mode == "F":
            a = np.asarray(im, dtype=np.float64)
            if not np.isfinite(a).all():
                raise DataError(path, "float map holds NaN or infinity")
            return np.clip(a, 0.0, None) / max(float(a.max()), 1e-300)
        if mode not in ("L", "1", "RGB", "RGBA", "LA", "P", "PA", "CMYK"):
            raise DataError(path, f"unsupported map mode {mode!r}")
        return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    finally:
        im.close()


def read_density(path: str | os.PathLike) -> np.ndarray:
    """Read a continuous saliency (density) map: float32 (H, W) in [0, 1], max-normalised.

    Raises:
        DataError: undecodable, or all zero (no saliency at all: a broken map).
    """
    d = read_gray(path)
    peak = float(d.max())
    if peak <= 0:
        raise DataError(path, "density map is empty (all zero)")
    return (d / peak).astype(np.float32)


def read_fixation_map(path: str | os.PathLike) -> np.ndarray:
    """Read a binary fixation map image: bool (H, W), True where the value exceeds 127 of 255.

    An empty map is returned as is; the caller decides (it is an error for a benchmark sample).
    """
    return read_gray(path) > 0.5


def read_fixations_mat(path: str | os.PathLike) -> dict:
    """Read a fixation ``.mat`` file in one of the two known forms.

    * SALICON (variable ``gaze``: one struct per observer with field ``fixations``, (n, 2)
      1-based (x, y); optional ``resolution`` = [H, W]) ->
      ``{"kind": "points", "points": float64 (N, 2) 0-based (x, y), "observers": int32 (N,),
      "resolution": (H, W) or None}``.
    * CAT2000 (variable ``fixLocs``: binary (H, W) map) -> ``{"kind": "map", "map": bool (H, W)}``.

    Raises:
        DataError: unreadable (corrupt, MATLAB v7.3/HDF5), or neither form.
    """
    path = Path(path)
    mat = load_mat(path)

    if "gaze" in mat:
        gaze = mat["gaze"]
        entries = [gaze] if isinstance(gaze, dict) else list(np.atleast_1d(gaze))
        pts, obs = [], []
        for k, entry in enumerate(entries):
            if not isinstance(entry, dict) or "fixations" not in entry:
                raise DataError(path, f"gaze entry {k} has no 'fixations' field (SALICON format expected)")
            f = np.asarray(entry["fixations"], dtype=np.float64)
            if f.size % 2:
                raise DataError(path, f"gaze entry {k}: fixations of shape {f.shape} are not (n, 2) pairs")
            f = f.reshape(-1, 2)
            pts.append(f - 1.0)  # files are 1-based
            obs.append(np.full(len(f), k, dtype=np.int32))
        points = np.concatenate(pts) if pts else np.zeros((0, 2))
        observers = np.concatenate(obs) if obs else np.zeros(0, np.int32)
        resolution = None
        if "resolution" in mat:
            r = np.asarray(mat["resolution"]).ravel()
            if r.size != 2:
                raise DataError(path, f"'resolution' should be [H, W], got {r.tolist()}")
            resolution = (int(r[0]), int(r[1]))
        return {"kind": "points", "points": points, "observers": observers, "resolution": resolution}
    if "fixLocs" in mat:
        m = np.asarray(mat["fixLocs"])
        if m.ndim != 2:
            raise DataError(path, f"'fixLocs' should be a 2-D map, got shape {m.shape}")
        return {"kind": "map", "map": m > 0}
    found = sorted(k for k in mat if not k.startswith("__"))
    raise DataError(path, f"neither 'gaze' (SALICON) nor 'fixLocs' (CAT2000) in .mat file; variables: {found}")


def points_to_fixation_map(points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise fixation points into a binary map.

    Args:
        points: float64 (N, 2) 0-based (x, y).
        shape: (H, W) of the image.

    Returns:
        ``(fixations, inside)``: bool (H, W) with True at each point rounded to the nearest pixel
        (half up), and bool (N,) marking the points that fall inside the image (others, and
        non-finite points, are dropped; the caller counts them).
    """
    h, w = int(shape[0]), int(shape[1])
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    finite = np.isfinite(pts).all(axis=1)
    col = np.floor(np.where(finite, pts[:, 0], -1.0) + 0.5)
    row = np.floor(np.where(finite, pts[:, 1], -1.0) + 0.5)
    inside = finite & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    fix = np.zeros((h, w), dtype=bool)
    fix[row[inside].astype(np.intp), col[inside].astype(np.intp)] = True
    return fix, inside


def _gauss(arg: np.ndarray) -> np.ndarray:
    """exp(arg), float32, with the far tails (arg < -40: beyond 8.9 sigma, weight < 5e-18) set to 0.

    Why: tail values multiplied together in the matrix product underflow to subnormal floats,
    which make it several times slower; at 8 bits of output they change nothing.
    """
    out = np.exp(np.maximum(arg, np.float32(-40.0)))
    out[arg < -40.0] = 0.0
    return out


def density_from_fixations(fixations: np.ndarray, sigma: float) -> np.ndarray:
    """Blur a binary fixation map with an isotropic Gaussian, zero outside the image.

    Computed as a sum of separable Gaussians centred on the fixated pixels
    (``G_y @ G_x``, cost H*W*n_fixated instead of H*W*kernel): identical to
    ``scipy.ndimage.gaussian_filter(fix.astype(float), sigma, mode="constant", truncate=8.9)``
    (zero outside the image), then max-normalised.

    Args:
        fixations: bool (H, W) with at least one True.
        sigma: standard deviation in pixels of the original image.

    Returns:
        float32 (H, W) in [0, 1], maximum exactly 1.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    rows, cols = np.nonzero(np.asarray(fixations, dtype=bool))
    h, w = fixations.shape
    if rows.size == 0:
        raise ValueError("density_from_fixations: the fixation map is empty")
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    inv = np.float32(-0.5 / (sigma * sigma))
    out = None
    for start in range(0, rows.size, 2048):  # bounded memory for maps with many fixations
        r = rows[start:start + 2048].astype(np.float32)
        c = cols[start:start + 2048].astype(np.float32)
        gy = _gauss(inv * (ys - r[None, :]) ** 2)  # (H, n)
        gx = _gauss(inv * (xs - c[:, None]) ** 2)  # (n, W)
        # einsum, not BLAS: single-threaded (BLAS threads spin when prepare workers share the cores)
        # and with a fixed summation order; float32 is plenty for a map quantised to 8 bits later.
        part = np.einsum("hn,nw->hw", gy, gx, optimize=False)
        out = part if out is None else out + part
    out /= out.max()
    return out
