"""DVC stages `distill` and `distill_no_pseudo`: the student learns from the labelled set plus
the teacher's cached pseudo-labels (one labelled pass and one pseudo-labelled pass per epoch,
EMA self-distillation) -> models/student.pt. With the item `no_pseudo` the same student, data
and epochs without pseudo-labels -> models/student_no_pseudo.pt (the paper's ablation), or,
with ``distill_no_pseudo.steps``, as many optimizer steps as the Semi-PKD arm takes."""

from __future__ import annotations

from pathlib import Path

import _checkout  # noqa: F401,I001  (this checkout's semipkd, also in a queued experiment's copy)
from semipkd.config import Params
from semipkd.models import build_model
from semipkd.runtime import select_device
from semipkd.stage import StageError, stage_main
from semipkd.training import no_pseudo_budget, pseudo_pool, train_labelled


def run(params: Params, item: str | None) -> None:
    """Distil the student (item `no_pseudo`: the labelled-only ablation)."""
    if item not in (None, "no_pseudo"):
        raise StageError(f"unknown variant {item!r}; use no item or 'no_pseudo'")
    name = "distill" if item is None else "distill_no_pseudo"
    device = select_device(params.device)
    pseudo = None
    if item is None:
        pseudo = pseudo_pool(params.prepare.output_size, params.distill.pseudo_augment, seed=params.seed,
                             bound_size=params.prepare.output_size)
    s = params.student
    model = build_model(
        s.backbone, output_size=params.prepare.output_size, pretrained=s.pretrained, width=s.width, weights=s.weights,
        decoder_act=s.decoder_act, head_bias=s.head_bias,
    )
    out = Path("models/student.pt" if item is None else "models/student_no_pseudo.pt")
    # The labelled-only control: epoch-matched (default) or step-matched to the Semi-PKD arm.
    budget = None if item is None else no_pseudo_budget(params.distill_no_pseudo, params.distill)
    train_labelled(
        model,
        Path("data/prepared") / params.data.labelled,
        params.distill,
        seed=params.seed,
        device=device,
        out_path=out,
        ckpt_dir=Path("models/ckpt") / name,
        live_dir=Path("reports") / name,
        pseudo=pseudo,
        head_prior=s.head_bias,
        budget=budget,
    )


if __name__ == "__main__":
    stage_main("distill", run)
