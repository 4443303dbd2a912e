"""Datasets: the five saliency benchmarks and the unlabeled pool, read, validated and prepared.

* :func:`open_benchmark` / :func:`open_unlabeled` read the on-disk layouts (docs/data.md) into
  lazily decoded sequences of samples, checking the folder structure at once.
* :func:`split_indices` gives the paper's seeded train/val split.
* :func:`resize_image`, :func:`resize_density`, :func:`rescale_fixations` are the one resize
  policy shared by prepare, evaluation and prediction.
* :func:`prepare_benchmark` / :func:`prepare_unlabeled` validate every sample and write the
  memory-mappable cache that :class:`PreparedDataset` / :class:`PreparedImages` serve to training.
* :func:`augment_pair` flips an image with its maps and applies photometric augmentation, with
  draws from :func:`augmentation_rng` ``(seed, epoch, index)``.

Every problem with an input file raises :class:`DataError` naming the file (or, with
``on_error="skip"``, skips and lists it) at open or prepare time.
"""

from .augment import PHOTOMETRIC_OPS, augment_pair, augmentation_rng, photometric_ops
from .benchmarks import (
    DENSITY_SIGMA_PX,
    SPLITS,
    BenchmarkSet,
    Sample,
    UnlabeledSample,
    UnlabeledSet,
    open_benchmark,
    open_unlabeled,
)
from .prepared import (
    CACHE_VERSION,
    PREPARED,
    PreparedDataset,
    PreparedImages,
    open_labelled_train,
    prepare_benchmark,
    prepare_unlabeled,
    prepared_root,
    read_meta,
    summarize_rows,
)
from .resize import rescale_fixations, resize_density, resize_image
from .splits import BENCHMARK_NAMES, PAPER_SPLITS, split_indices
from .validate import DataError, density_from_fixations, points_to_fixation_map

__all__ = [
    "BENCHMARK_NAMES",
    "PAPER_SPLITS",
    "SPLITS",
    "DENSITY_SIGMA_PX",
    "CACHE_VERSION",
    "PHOTOMETRIC_OPS",
    "DataError",
    "Sample",
    "BenchmarkSet",
    "UnlabeledSample",
    "UnlabeledSet",
    "open_benchmark",
    "open_unlabeled",
    "split_indices",
    "resize_image",
    "resize_density",
    "rescale_fixations",
    "points_to_fixation_map",
    "density_from_fixations",
    "PREPARED",
    "open_labelled_train",
    "prepare_benchmark",
    "prepared_root",
    "prepare_unlabeled",
    "read_meta",
    "summarize_rows",
    "PreparedDataset",
    "PreparedImages",
    "augment_pair",
    "augmentation_rng",
    "photometric_ops",
]
