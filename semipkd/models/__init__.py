"""Model zoo: the paper's teachers and students (encoder + U-Net-like decoder).

Public API::

    build_model(backbone, *, output_size=(480, 640), pretrained=False, width=1.0, weights=None, decoder_act=None)
    list_backbones()
    load_model(path, map_location="cpu")        # rebuild from a checkpoint alone
    checkpoint_payload(model)                   # {"model": state_dict, "model_config": config}
    build_imagenet_classifier(backbone)         # the encoder's ImageNet classifier (weight checks)
    optimize_for_inference(model, input_size)   # fused, frozen CPU graph, same outputs
    profile(model_or_name, input_size=(288, 384))

Tensors: images float (B, 3, H, W) RGB in [0, 1] in, saliency maps float (B, H_out, W_out) in
[0, 1] out; normalisation happens inside the model. ``python -m semipkd.models.profile NAME...``
prints a cost table.
"""

from .cost import count_macs, count_params, profile
from .decoder import Decoder, GaussianBlur, Normalize, eval_blur, scale_channels
from .optimize import OptimizedModel, optimize_for_inference
from .registry import (
    BackboneSpec,
    ModelFileError,
    SaliencyModel,
    build_imagenet_classifier,
    build_model,
    checkpoint_payload,
    get_backbone,
    list_backbones,
    load_model,
    register_backbone,
)

__all__ = [
    "BackboneSpec",
    "Decoder",
    "ModelFileError",
    "GaussianBlur",
    "Normalize",
    "OptimizedModel",
    "SaliencyModel",
    "build_imagenet_classifier",
    "build_model",
    "checkpoint_payload",
    "count_macs",
    "count_params",
    "eval_blur",
    "get_backbone",
    "list_backbones",
    "load_model",
    "optimize_for_inference",
    "profile",
    "register_backbone",
    "scale_channels",
]
