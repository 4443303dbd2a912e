"""semipkd: saliency prediction by semi-supervised pseudo-knowledge distillation (Semi-PKD).

The package holds the science (models, metrics, losses, data, training engine); the DVC stages
in ``stages/`` are thin entry points that read ``params.yaml`` and call into it.
"""

import os as _os

# OpenMP threads that spin while waiting for work make torch's CPU kernels up to 15x slower
# when anything else uses the cores (measured here on 2 cores: a MobileNetV2 forward took 4.15 s
# spinning vs 0.27 s passive). Sleeping waiters cost next to nothing on an idle machine. This
# must be set before torch loads OpenMP, so it lives at the package's import; an explicit
# setting in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
