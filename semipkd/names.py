"""The project's vocabulary: dataset ids, model keys, protocols, metric names, error policies.

Every other module imports these names from here, so a new dataset or metric is added in one
place. The strings are the keys used in params.yaml, file names and report JSON alike. This
module imports nothing from the package (everything may import it).
"""

from __future__ import annotations

__all__ = [
    "LABELLED_SET",
    "BENCHMARKS",
    "REAL_ONLY_BENCHMARKS",
    "ALL_BENCHMARKS",
    "DATASETS",
    "LABELLED_SETS",
    "UNLABELED",
    "DATASET_LABELS",
    "TEACHER",
    "STUDENT",
    "STUDENT_NO_PSEUDO",
    "STUDENTS",
    "MODELS",
    "CENTER_BIAS",
    "MODEL_KEYS",
    "MODEL_LABELS",
    "PROTOCOLS",
    "PROTOCOL_LABELS",
    "METRIC_NAMES",
    "TABLE_METRICS",
    "ON_ERROR",
    "AUGMENTS",
    "EMA_MIX_MODES",
    "NSS_AGGREGATIONS",
    "SELECT_METRICS",
]

#: The paper's labelled set (teacher and students learn from it first).
LABELLED_SET = "salicon"
#: The fine-tuning / evaluation benchmarks, in the paper's order (each has a generated version).
BENCHMARKS = ("mit1003", "cat2000", "pascal_s", "osie")
#: Further real benchmarks, read as distributed; no generated version (``data.source: real``).
REAL_ONLY_BENCHMARKS = ("eyecrowd",)
#: Every benchmark ``data.benchmarks`` may name.
ALL_BENCHMARKS = BENCHMARKS + REAL_ONLY_BENCHMARKS
#: Every labelled dataset id, in report order.
DATASETS = (LABELLED_SET,) + ALL_BENCHMARKS
#: Sets a teacher and student may learn from first (SALICON in the paper).
LABELLED_SETS = DATASETS
#: The id of the unlabeled image pool (prepared cache folder, report keys).
UNLABELED = "unlabeled"
#: How tables and figures name the datasets.
DATASET_LABELS = {
    "salicon": "SALICON",
    "mit1003": "MIT1003",
    "cat2000": "CAT2000",
    "pascal_s": "PASCAL-S",
    "osie": "OSIE",
    "eyecrowd": "EyeCrowd",
}

#: Model keys: the checkpoints the pipeline trains.
TEACHER = "teacher"
STUDENT = "student"
#: The ablation: the same student, data and budget without pseudo-labels.
STUDENT_NO_PSEUDO = "student_no_pseudo"
STUDENTS = (STUDENT, STUDENT_NO_PSEUDO)
MODELS = (TEACHER,) + STUDENTS
#: The analytic baseline scored beside the models.
CENTER_BIAS = "center_bias"
#: Model keys of ``reports/evaluate/<dataset>.json``, in report order.
MODEL_KEYS = MODELS + (CENTER_BIAS,)
MODEL_LABELS = {
    TEACHER: "Teacher",
    STUDENT: "Student (Semi-PKD)",
    STUDENT_NO_PSEUDO: "Student w/o pseudo-labels",
    CENTER_BIAS: "Center bias",
}

#: Evaluation protocols, in report order (docs/evaluation.md).
PROTOCOLS = ("benchmark", "model_resolution")
PROTOCOL_LABELS = {
    "benchmark": "benchmark protocol (maps at each image's original size)",
    "model_resolution": "model-resolution protocol (maps at the model's output size)",
}

#: Metric names; equal to the keys of every metrics JSON the pipeline writes.
METRIC_NAMES = ("cc", "kld", "nss", "sim", "auc_judd", "auc_borji", "sauc", "info_gain")
#: Metrics shown in the md/tex tables (the paper's columns), in order.
TABLE_METRICS = ("cc", "kld", "nss", "sim", "auc_judd", "sauc")

#: What to do with a bad sample or input file: stop naming it, or skip it, counted and logged.
ON_ERROR = ("raise", "skip")

#: Training augmentations a params file may name (``augment``, ``pseudo_augment``), in the
#: order they are applied: flip (image and maps), ColorJitter, one TrivialAugmentWide op.
AUGMENTS = ("hflip", "color_jitter", "trivial_augment")
#: How the EMA self-distillation target is mixed: the paper code's raw maps, or the two maps as
#: distributions (each normalised to sum 1 first).
EMA_MIX_MODES = ("raw", "normalized")
#: How the labelled loss's NSS term meets the batch: the mean of the per-image
#: ``1 - sigmoid(NSS_i)`` (ours), or ``1 - sigmoid(mean_i NSS_i)`` (the paper's code).
NSS_AGGREGATIONS = ("per_image", "batch_mean")
#: Validation scores the best epoch may be chosen by, and whether larger is better.
#: ``paper_sum`` is the paper code's: (1-CC) + KLD + (1-sigmoid(NSS)) + (1-SIM) + (1-AUC-Judd).
SELECT_METRICS = {"loss": False, "paper_sum": False, "kld": False, "cc": True, "nss": True, "sim": True}
