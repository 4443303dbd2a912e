"""Scoring saliency models on a benchmark's val split under two protocols.

Every predictor (a model, or the analytic center-bias baseline) is scored with all eight metrics
of :mod:`semipkd.metrics` on every image, then averaged over images:

``benchmark``
    The way benchmark servers score submissions: the model's map is resized to each image's
    ORIGINAL size with :func:`semipkd.metrics.resize_to` and compared with the ground truth at
    that size. Binary fixation maps are never interpolated (interpolation drops or smears
    fixations); they are used exactly as recorded.
``model_resolution``
    As papers in this family report: maps at the model's output size, the ground truth brought
    there with :func:`semipkd.data.resize_density` (density) and
    :func:`semipkd.data.rescale_fixations` (fixations, by scaling coordinates).

Decisions that change numbers, all explicit here:

* Metrics are computed in float64 (the predictions themselves come out of the network in
  float32, or in half precision under CUDA autocast, and are cast up before scoring).
* sAUC's negatives for image *i* are the union of the fixations of all OTHER images of the same
  split, each mapped to image *i*'s size by :func:`semipkd.data.rescale_fixations`.
* Information gain is measured against the center-bias baseline (:func:`center_bias_map`) at
  the evaluation size, so the center-bias row scores exactly 0 there.
* Sampled metrics (AUC-Borji, sAUC) draw from a generator seeded from ``(seed, image index)``:
  every predictor sees the same random draws on the same image, and the numbers do not depend on
  the batch size or on which other predictors were evaluated.
* The summary of a metric is the plain mean over images (every image weighs the same).
* An image without any fixation, or with an all-zero density, has undefined metrics; it is an
  error naming the image (validate or drop it when preparing the data), never a silent skip.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from semipkd import metrics
from semipkd.data import rescale_fixations, resize_density, resize_image
from semipkd.inference import batches, check_size, eval_mode, forward_maps, images_to_tensor
from semipkd.io import atomic_write_text
from semipkd.names import CENTER_BIAS, MODEL_KEYS, PROTOCOLS

__all__ = [
    "PROTOCOLS",
    "CENTER_BIAS",
    "MODEL_KEYS",
    "Example",
    "EvaluationResult",
    "center_bias_map",
    "predict_maps",
    "evaluate_benchmark",
    "per_image_csv",
    "write_per_image_csv",
]

log = logging.getLogger(__name__)

# PROTOCOLS, CENTER_BIAS (the predictor name of the analytic baseline) and MODEL_KEYS (of
# ``reports/evaluate/<benchmark>.json``) come from semipkd.names, re-exported here.

# Largest side of the images/maps kept for the figure grid: figures need a few hundred pixels,
# and full-size CAT2000 examples (1080x1920) would make the examples file tens of megabytes.
_EXAMPLE_MAX_SIDE = 320


# --------------------------------------------------------------------------------------------
# Center bias


def center_bias_map(
    size: tuple[int, int],
    sigma_frac: float = 0.25,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Center-bias baseline: a Gaussian at the image center, stretched to the image's aspect.

    ``M(y, x) = exp(-((y - cy)^2 / (2 sy^2) + (x - cx)^2 / (2 sx^2)))`` with the center
    ``(cy, cx) = ((H - 1) / 2, (W - 1) / 2)`` in pixel-center coordinates and per-axis standard
    deviations ``sy = sigma_frac * H``, ``sx = sigma_frac * W`` (Judd et al.'s "center" model is a
    Gaussian stretched to the image's aspect ratio in the same way). Because the widths scale with
    the image, the map has the same shape at every resolution; evaluation draws it directly at
    each evaluation size instead of resizing it.

    Args:
        size: (H, W) of the map, positive ints.
        sigma_frac: standard deviation as a fraction of each side, > 0.

    Returns:
        (H, W) tensor of ``dtype`` in (0, 1], maximum 1 at the center (max-normalised like the
        ground-truth densities).
    """
    h, w = check_size(size, "size")
    if not sigma_frac > 0:
        raise ValueError(f"sigma_frac: must be > 0, got {sigma_frac}")
    ys = torch.arange(h, device=device, dtype=torch.float64) - (h - 1) / 2.0
    xs = torch.arange(w, device=device, dtype=torch.float64) - (w - 1) / 2.0
    gy = torch.exp(-0.5 * (ys / (sigma_frac * h)) ** 2)
    gx = torch.exp(-0.5 * (xs / (sigma_frac * w)) ** 2)
    m = gy[:, None] * gx[None, :]
    return (m / m.max()).to(dtype)


# --------------------------------------------------------------------------------------------
# Inference


def predict_maps(
    model: nn.Module,
    samples: Sequence[Any],
    input_size: tuple[int, int],
    device: torch.device | str,
    batch_size: int = 16,
    *,
    progress: bool = True,
) -> torch.Tensor:
    """Predict a saliency map for every sample, batched.

    Args:
        model: maps float (B, 3, H, W) RGB [0, 1] to (B, H_out, W_out) [0, 1]; moved to
            ``device`` and run in eval mode (its train/eval mode is restored afterwards).
        samples: objects with ``.image`` uint8 (H_i, W_i, 3) RGB (``semipkd.data.Sample``).
        input_size: (H, W) the images are resized to.

    Returns:
        float32 (N, H_out, W_out) in [0, 1] on the CPU, in the order of ``samples``. For a whole
        benchmark at full size prefer :func:`evaluate_benchmark`, which streams.
    """
    device = torch.device(device)
    model.to(device)
    out = []
    with eval_mode(model):
        for idx in tqdm(list(batches(len(samples), batch_size)), desc="predict", disable=None if progress else True):
            x = images_to_tensor([samples[i].image for i in idx], input_size)
            out.append(forward_maps(model, x, device).cpu())
    if not out:
        raise ValueError("predict_maps: no samples given")
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Example:
    """One image kept for the figure grid, downscaled to at most 320 px on its longer side.

    ``image`` uint8 (h, w, 3) RGB; ``density`` float32 (h, w) in [0, 1]; ``fixations`` bool
    (h, w); ``predictions`` maps a predictor name to float32 (h, w) in [0, 1] (the model's map
    resized to the example's size, as the benchmark protocol does).
    """

    name: str
    image: np.ndarray
    density: np.ndarray
    fixations: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    """What :func:`evaluate_benchmark` returns.

    ``scores``: ``{predictor: {protocol: {metric: mean}}}`` with plain floats (the JSON written to
    ``reports/evaluate/<benchmark>.json``). ``per_image``: the same nesting with float64 (N,)
    arrays, one value per image. ``names``: the N image names.
    ``examples``: a few images with ground truth and every predictor's map, for figures.
    """

    scores: dict[str, dict[str, dict[str, float]]]
    per_image: dict[str, dict[str, dict[str, np.ndarray]]]
    names: list[str]
    examples: list[Example]


class _FixationUnion:
    """Count maps of all images' fixations, mapped to a given size, for sAUC's negatives.

    ``other(size, own)`` is the union, at ``size``, of the fixations of every image except the
    one whose fixations at that size are ``own``: the count of all images' rescaled fixations
    minus ``own``, > 0. Counts are built once per distinct size and cached.
    """

    def __init__(self, fixations: list[tuple[tuple[int, int], np.ndarray, np.ndarray]]):
        # Per image: (original size, fixated rows, fixated cols) -- a few KB each instead of
        # whole maps, so the pre-pass costs no memory even on SALICON's 5,000 val images.
        self._fix = fixations
        self._counts: dict[tuple[int, int], np.ndarray] = {}

    def _map(self, i: int) -> np.ndarray:
        size, rows, cols = self._fix[i]
        m = np.zeros(size, dtype=bool)
        m[rows, cols] = True
        return m

    def counts(self, size: tuple[int, int]) -> np.ndarray:
        if size not in self._counts:
            total = np.zeros(size, dtype=np.int32)
            for i, (orig, _, _) in enumerate(self._fix):
                total += self._map(i) if tuple(orig) == size else np.asarray(rescale_fixations(self._map(i), size), dtype=bool)
            self._counts[size] = total
        return self._counts[size]

    def other(self, size: tuple[int, int], own: np.ndarray) -> np.ndarray:
        return (self.counts(size) - own.astype(np.int32)) > 0


def _example_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = size
    scale = min(1.0, _EXAMPLE_MAX_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _check_predictors(predictors: Mapping[str, Any]) -> None:
    if not predictors:
        raise ValueError("predictors: give at least one model or 'center_bias'")
    for key, p in predictors.items():
        if isinstance(p, str):
            if p != CENTER_BIAS:
                raise ValueError(f"predictors[{key!r}]: unknown baseline {p!r}; known: {CENTER_BIAS!r} (or pass an nn.Module)")
        elif not isinstance(p, nn.Module):
            raise TypeError(f"predictors[{key!r}]: expected an nn.Module or {CENTER_BIAS!r}, got {type(p).__name__}")


def _score_batch(
    pred: torch.Tensor,
    density: torch.Tensor,
    fix: torch.Tensor,
    other: torch.Tensor,
    baseline: torch.Tensor,
    gens: Sequence[torch.Generator],
) -> dict[str, torch.Tensor]:
    """All eight metrics on a same-size batch; float64 maps, bool fixations -> name -> (B,)."""
    pred, density, baseline = pred.double(), density.double(), baseline.double()
    out = {
        "cc": metrics.cc(pred, density),
        "kld": metrics.kld(pred, density),
        "sim": metrics.sim(pred, density),
        "nss": metrics.nss(pred, fix),
        "auc_judd": metrics.auc_judd(pred, fix),
        "info_gain": metrics.info_gain(pred, fix, baseline),
    }
    # Sampled metrics image by image, each with its own generator: identical draws for every
    # predictor on the same image, independent of how the images are batched.
    out["auc_borji"] = torch.cat([metrics.auc_borji(pred[b : b + 1], fix[b : b + 1], generator=g) for b, g in enumerate(gens)])
    out["sauc"] = torch.cat(
        [metrics.sauc(pred[b : b + 1], fix[b : b + 1], other[b : b + 1], generator=g) for b, g in enumerate(gens)]
    )
    missing = set(metrics.METRIC_NAMES) - set(out)
    if missing:
        raise RuntimeError(f"semipkd.metrics defines metrics this evaluation does not compute: {sorted(missing)}")
    return {k: out[k].detach().double().cpu() for k in metrics.METRIC_NAMES}


def evaluate_benchmark(
    predictors: Mapping[str, nn.Module | str],
    samples: Sequence[Any],
    *,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    device: torch.device | str,
    seed: int,
    protocols: Sequence[str] = PROTOCOLS,
    batch_size: int = 16,
    center_bias_sigma: float = 0.25,
    num_examples: int = 4,
    progress: bool = True,
    input_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> EvaluationResult:
    """Score every predictor on every sample with all eight metrics, under each protocol.

    Args:
        predictors: name -> model (float (B, 3, H, W) RGB [0, 1] -> (B, H_out, W_out) [0, 1]) or
            the string ``"center_bias"`` for :func:`center_bias_map`. Models are moved to
            ``device``, run in eval mode, and their ``output_size`` is set to ``output_size`` for
            the evaluation (restored afterwards) so every model is scored at the same resolution.
        samples: the split, objects with ``name``, ``image`` uint8 (H, W, 3), ``density`` float32
            (H, W) in [0, 1] and ``fixations`` bool (H, W), all at the image's original size
            (``semipkd.data.Sample``). Read twice: once for the fixations (sAUC), once to score.
        input_size: (H, W) the images are fed to the models at.
        output_size: (H, W) of the ``model_resolution`` protocol.
        device: where inference and metrics run.
        seed: seeds the sampled metrics (see module docstring).
        protocols: subset of :data:`PROTOCOLS`.
        center_bias_sigma: ``sigma_frac`` of the center-bias baseline and of info gain's baseline.
        num_examples: images kept (evenly spaced over the split) for the figure grid.
        input_sizes: per-predictor input sizes that replace ``input_size`` (e.g. a teacher
            trained at its own resolution); every map is still scored at the same sizes.

    Returns:
        :class:`EvaluationResult`; ``scores`` is ``{predictor: {protocol: {metric: float}}}``.
    """
    _check_predictors(predictors)
    protocols = tuple(protocols)
    if not protocols:
        raise ValueError(f"protocols: give at least one of {PROTOCOLS}")
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"protocols: unknown protocol {p!r}; known: {', '.join(PROTOCOLS)}")
    input_size = check_size(input_size, "input_size")
    output_size = check_size(output_size, "output_size")
    sizes_in = {k: check_size((input_sizes or {}).get(k, input_size), f"input_sizes[{k}]") for k in predictors}
    device = torch.device(device)
    n = len(samples)
    if n == 0:
        raise ValueError("samples: the split is empty")

    # Pre-pass: names, sizes and fixated pixels of every image (needed before scoring image 0,
    # since its sAUC negatives come from all the others).
    names: list[str] = []
    fix_index = []
    for s in tqdm(samples, desc="fixations", total=n, disable=None if progress else True):
        fix = np.asarray(s.fixations, dtype=bool)
        if fix.ndim != 2:
            raise ValueError(f"sample {s.name!r}: fixations must be a 2-D map, got shape {fix.shape}")
        rows, cols = np.nonzero(fix)
        if rows.size == 0:
            raise ValueError(f"sample {s.name!r}: no fixations; every fixation metric is undefined on it")
        names.append(str(s.name))
        fix_index.append((tuple(int(v) for v in fix.shape), rows, cols))
    if n < 2:
        raise ValueError("samples: sAUC needs at least 2 images (its negatives are the other images' fixations)")
    union = _FixationUnion(fix_index)

    example_idx = np.linspace(0, n - 1, num=min(max(num_examples, 0), n)).round().astype(int).tolist()
    scorer = _Scorer(list(predictors), protocols, output_size, device, seed, union, center_bias_sigma, set(example_idx))

    models = {k: p for k, p in predictors.items() if isinstance(p, nn.Module)}
    saved_sizes = {}
    with contextlib.ExitStack() as stack:
        for k, m in models.items():
            m.to(device)
            stack.enter_context(eval_mode(m))
            if hasattr(m, "output_size"):
                saved_sizes[k] = m.output_size
                m.output_size = output_size
        try:
            for idx in tqdm(list(batches(n, batch_size)), desc="evaluate", disable=None if progress else True):
                batch = [samples[i] for i in idx]
                for i, s in zip(idx, batch, strict=True):
                    if str(s.name) != names[i]:
                        raise RuntimeError(f"samples changed order between passes: {names[i]!r} became {s.name!r}")
                    if not np.any(np.asarray(s.density) > 0):
                        raise ValueError(f"sample {s.name!r}: all-zero density; CC, KLD and SIM are undefined on it")
                xs = {size: images_to_tensor([s.image for s in batch], size)
                      for size in dict.fromkeys(sizes_in[k] for k in models)}
                preds: dict[str, torch.Tensor | None] = {}
                for k, p in predictors.items():
                    if isinstance(p, nn.Module):
                        out = forward_maps(p, xs[sizes_in[k]], device)
                        if tuple(out.shape[-2:]) != output_size:
                            # A model without a settable output size: bring its maps to the
                            # protocol's size the benchmark way.
                            out = metrics.resize_to(out, output_size)
                        preds[k] = out
                    else:
                        preds[k] = None  # analytic: drawn at each evaluation size
                try:
                    scorer.add(idx, batch, preds)
                except ValueError as e:
                    raise ValueError(f"scoring images {[str(s.name) for s in batch]}: {e}") from e
        finally:
            for k, size in saved_sizes.items():
                models[k].output_size = size

    per_image = {
        k: {p: {m: torch.cat(v).numpy() for m, v in per_p.items()} for p, per_p in per_k.items()}
        for k, per_k in scorer.values.items()
    }
    scores = {
        k: {p: {m: _mean(arr, names, f"{k}/{p}/{m}") for m, arr in per_p.items()} for p, per_p in per_k.items()}
        for k, per_k in per_image.items()
    }
    log.info("scored %d images: %s under %s", n, ", ".join(predictors), ", ".join(protocols))
    return EvaluationResult(
        scores=scores, per_image=per_image, names=names, examples=[scorer.examples[i] for i in sorted(scorer.examples)]
    )


class _Scorer:
    """Accumulates per-image metric values batch by batch, for every predictor and protocol."""

    def __init__(self, keys, protocols, output_size, device, seed, union, sigma, example_idx):
        self.protocols = protocols
        self.output_size = output_size
        self.device = device
        self.seed = int(seed)
        self.union = union
        self.sigma = sigma
        self.example_idx = example_idx
        self.values: dict[str, dict[str, dict[str, list[torch.Tensor]]]] = {
            k: {p: {m: [] for m in metrics.METRIC_NAMES} for p in protocols} for k in keys
        }
        self.examples: dict[int, Example] = {}
        self._center: dict[tuple[int, int], torch.Tensor] = {}

    def center(self, size: tuple[int, int]) -> torch.Tensor:
        """float64 (H, W) center bias on the device, cached per size."""
        if size not in self._center:
            self._center[size] = center_bias_map(size, self.sigma, device=self.device, dtype=torch.float64)
        return self._center[size]

    def _gens(self, idx: Sequence[int]) -> list[torch.Generator]:
        """One generator per image, restarted at that image's stream: every predictor and
        protocol draws the same negatives on the same image, whatever the batching."""
        gens = []
        for i in idx:
            g = torch.Generator(device=self.device)
            # The large odd multiplier keeps neighbouring seeds from sharing images' streams.
            g.manual_seed((self.seed * 1_000_003 + int(i)) % (2**63))
            gens.append(g)
        return gens

    def add(self, idx: Sequence[int], batch: Sequence[Any], preds: Mapping[str, torch.Tensor | None]) -> None:
        dev = self.device
        if "model_resolution" in self.protocols:
            size = self.output_size
            dens = torch.from_numpy(np.stack([np.asarray(resize_density(s.density, size), dtype=np.float32) for s in batch]))
            fix_np = np.stack([np.asarray(rescale_fixations(np.asarray(s.fixations, dtype=bool), size), dtype=bool)
                               for s in batch])
            other = torch.from_numpy(np.stack([self.union.other(size, f) for f in fix_np])).to(dev)
            fix, dens = torch.from_numpy(fix_np).to(dev), dens.to(dev)
            base = self.center(size).expand(len(batch), *size)
            for k, pred in preds.items():
                scores = _score_batch(base if pred is None else pred, dens, fix, other, base, self._gens(idx))
                for m, v in scores.items():
                    self.values[k]["model_resolution"][m].append(v)

        if "benchmark" in self.protocols:
            for j, (i, s) in enumerate(zip(idx, batch, strict=True)):
                fix_np = np.asarray(s.fixations, dtype=bool)
                size = tuple(fix_np.shape)
                density = np.asarray(s.density, dtype=np.float32)
                if density.shape != size:
                    raise ValueError(f"sample {s.name!r}: density {density.shape} and fixations {size} differ in size")
                dens = torch.from_numpy(density).to(dev)[None]
                fix = torch.from_numpy(fix_np).to(dev)[None]
                other = torch.from_numpy(self.union.other(size, fix_np)).to(dev)[None]
                base = self.center(size)[None]
                for k, pred in preds.items():
                    p = base if pred is None else metrics.resize_to(pred[j : j + 1], size)
                    scores = _score_batch(p, dens, fix, other, base, self._gens([i]))
                    for m, v in scores.items():
                        self.values[k]["benchmark"][m].append(v)

        for j, (i, s) in enumerate(zip(idx, batch, strict=True)):
            if i in self.example_idx:
                self.examples[i] = _make_example(s, {k: (None if p is None else p[j]) for k, p in preds.items()}, self.center)


def _make_example(sample: Any, preds: Mapping[str, torch.Tensor | None], center) -> Example:
    fix = np.asarray(sample.fixations, dtype=bool)
    size = _example_size(tuple(fix.shape))
    maps = {}
    for k, p in preds.items():
        m = center(size) if p is None else metrics.resize_to(p[None], size)[0]
        maps[k] = m.float().cpu().numpy()
    return Example(
        name=str(sample.name),
        image=np.asarray(resize_image(np.asarray(sample.image), size), dtype=np.uint8),
        density=np.asarray(resize_density(np.asarray(sample.density, dtype=np.float32), size), dtype=np.float32),
        fixations=np.asarray(rescale_fixations(fix, size), dtype=bool),
        predictions=maps,
    )


def _mean(arr: np.ndarray, names: Sequence[str], what: str) -> float:
    finite = np.isfinite(arr)
    if not finite.all():
        # semipkd.metrics raises rather than return NaN, so this is a bug, not a data problem
        bad = [names[i] for i in np.flatnonzero(~finite)]
        raise RuntimeError(f"{what}: non-finite on {len(bad)} images: {', '.join(bad[:10])}")
    return float(arr.mean())


# --------------------------------------------------------------------------------------------
# Side outputs for figures and inspection


def per_image_csv(result: EvaluationResult) -> str:
    """Per-image values as CSV text: ``name,predictor,protocol,<eight metrics>`` (full precision)."""
    lines = [",".join(["name", "predictor", "protocol", *metrics.METRIC_NAMES])]
    for k, per_k in result.per_image.items():
        for p, per_p in per_k.items():
            for i, name in enumerate(result.names):
                vals = [repr(float(per_p[m][i])) for m in metrics.METRIC_NAMES]
                lines.append(",".join([_csv_field(name), k, p, *vals]))
    return "\n".join(lines) + "\n"


def write_per_image_csv(path: str | Path, result: EvaluationResult) -> None:
    """Write :func:`per_image_csv` to ``path`` atomically."""
    atomic_write_text(path, per_image_csv(result))


def _csv_field(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s
