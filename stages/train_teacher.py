"""DVC stage `train_teacher`: the teacher learns fixation density on the labelled set
(SALICON in the paper) -> models/teacher.pt, per-epoch history under reports/train_teacher/.
At its own resolution (prepare.teacher_input_size) it reads data/prepared/teacher/."""

from __future__ import annotations

from pathlib import Path

import _checkout  # noqa: F401,I001  (this checkout's semipkd, also in a queued experiment's copy)
from semipkd.config import Params
from semipkd.data import prepared_root
from semipkd.models import build_model
from semipkd.runtime import select_device
from semipkd.stage import stage_main
from semipkd.training import train_labelled


def run(params: Params, _item: str | None) -> None:
    """Train the teacher."""
    device = select_device(params.device)
    t = params.teacher
    _, output_size = params.prepare.teacher_sizes()
    model = build_model(t.backbone, output_size=output_size, pretrained=t.pretrained, width=t.width, weights=t.weights,
                        decoder_act=t.decoder_act, head_bias=t.head_bias)
    train_labelled(
        model,
        prepared_root(params.prepare, teacher=True) / params.data.labelled,
        params.train_teacher,
        seed=params.seed,
        device=device,
        out_path=Path("models/teacher.pt"),
        ckpt_dir=Path("models/ckpt/train_teacher"),
        live_dir=Path("reports/train_teacher"),
        head_prior=t.head_bias,
    )


if __name__ == "__main__":
    stage_main("train_teacher", run)
