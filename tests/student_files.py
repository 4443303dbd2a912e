"""Small files the predict, export and int8 tests share: a saved student and encoded images.

A module of its own rather than conftest.py: ``from conftest import ...`` resolves to whichever
conftest pytest imported under that name first (tests/faults has one too).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from semipkd.models import SaliencyModel, build_model, checkpoint_payload


def save_spread_student(path: Path, output_size: tuple[int, int]) -> SaliencyModel:
    """A real mobilenet_v2 student with random weights, saved as a checkpoint at ``path``.

    Random weights give maps within 0.498..0.501, which all become 254-255 in a PNG; the head
    scaled by 50 spreads them over ~0.1..0.9, so comparisons of maps and PNGs mean something.
    Returns the model (eval mode)."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", output_size=output_size, pretrained=False).eval()
    with torch.no_grad():
        model.decoder.head.weight.mul_(50.0)
    torch.save(checkpoint_payload(model), path)
    return model


def write_image(path: Path, img: np.ndarray) -> None:
    """Encode ``img`` (uint8, BGR or grey) in the format ``path``'s suffix names, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, img)
    assert ok, path
    path.write_bytes(data.tobytes())
