"""semipkd: saliency prediction by semi-supervised pseudo-knowledge distillation (Semi-PKD).

The package holds the science (models, metrics, losses, data, training engine); the DVC stages
in ``stages/`` are thin entry points that read ``params.yaml`` and call into it.
"""

__version__ = "0.1.0"
