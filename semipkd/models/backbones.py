"""Encoders: ImageNet classifiers from timm/torchvision, cut into five skip features.

Every backbone is first built as its full ImageNet classifier (so ImageNet weight files load into
it by their own key names, and a loaded classifier can be checked on a real photo), then
:class:`TimmStagesEncoder` or :class:`TorchvisionFeaturesEncoder` keeps the layers up to the
last feature map and drops the classification head. The five features are taken where the
paper's code takes them (``PKD/models/backbone.py``): the stem output at stride 2, then the ends
of the stages at strides 4, 8, 16 and 32 (for EfficientNets the 1x1 head convolution + BN).

EEEA-Net-C2 and OFA-595 are once-for-all MobileNetV3 subnets. They are built with timm's
MobileNetV3 builder from their subnet definitions, read as facts from the configs shipped by the
``darmo`` package (``darmo/config/eeea_c2.config``) and by OFA's model zoo
(``flops@595M_top1@80.0_finetune@75/net.config``): per block kernel size, expansion ratio,
width, stride, activation and squeeze-excite flag. timm's inverted-residual block and SE layer
(reduction to ``make_divisible(mid / 4, 8)``, ReLU, hard-sigmoid gate, biased 1x1 convolutions)
are the same layers as OFA's, in the same order, so the parameter counts agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "SubnetStage",
    "Subnet",
    "EEEA_C2",
    "OFA_595",
    "build_subnet_classifier",
    "TimmStagesEncoder",
    "TorchvisionFeaturesEncoder",
    "feature_channels",
]


@dataclass(frozen=True)
class SubnetStage:
    """One stage of an OFA MobileNetV3 subnet: every block has its own (kernel, expansion)."""

    channels: int
    stride: int  # stride of the first block; the others have stride 1
    act: str  # "relu" or "hard_swish"
    se: bool
    blocks: tuple[tuple[int, int], ...]  # (kernel_size, expand_ratio) per block


@dataclass(frozen=True)
class Subnet:
    """An OFA MobileNetV3 subnet: stem, a depthwise-separable first block, 5 stages, 1x1 expand."""

    stem: int
    stages: tuple[SubnetStage, ...]
    final_expand: int  # channels of the last 1x1 conv + BN + hard-swish (the encoder's out5)
    head: int  # channels of the classifier's feature-mix 1x1 conv (after pooling, no BN)

    def arch_def(self) -> list[list[str]]:
        """timm ``decode_arch_def`` strings, one stage per list."""
        arch = [[f"ds_r1_k3_s1_e1_c{self.stem}_nre"]]  # OFA's first block: 3x3 dw, ReLU, no expansion
        for st in self.stages:
            stage = []
            for i, (k, e) in enumerate(st.blocks):
                s = st.stride if i == 0 else 1
                spec = f"ir_r1_k{k}_s{s}_e{e}_c{st.channels}"
                if st.se:
                    spec += "_se0.25"
                if st.act == "relu":
                    spec += "_nre"
                elif st.act != "hard_swish":
                    raise ValueError(f"unknown subnet activation {st.act!r}")
                stage.append(spec)
            arch.append(stage)
        arch.append([f"cn_r1_k1_s1_c{self.final_expand}"])
        return arch


# EEEA-Net-C2 (Termritthikun et al., 2021), from darmo/config/eeea_c2.config.
EEEA_C2 = Subnet(
    stem=16,
    stages=(
        SubnetStage(24, 2, "relu", False, ((3, 3), (5, 4), (3, 3))),
        SubnetStage(40, 2, "relu", True, ((7, 4), (3, 3), (7, 3))),
        SubnetStage(80, 2, "hard_swish", False, ((5, 6), (7, 6), (5, 3), (3, 3))),
        SubnetStage(112, 1, "hard_swish", True, ((7, 6), (5, 4), (3, 3), (3, 3))),
        SubnetStage(160, 2, "hard_swish", True, ((5, 6), (3, 6), (5, 6), (7, 3))),
    ),
    final_expand=960,
    head=1280,
)

# OFA "flops@595M_top1@80.0_finetune@75" (Cai et al., 2020), darmo's ofa595_1k.
OFA_595 = Subnet(
    stem=24,
    stages=(
        SubnetStage(32, 2, "relu", False, ((3, 3), (5, 4), (3, 3))),
        SubnetStage(48, 2, "relu", True, ((5, 4), (5, 4), (3, 6), (5, 3))),
        SubnetStage(96, 2, "hard_swish", False, ((7, 6), (5, 6), (3, 3), (5, 4))),
        SubnetStage(136, 1, "hard_swish", True, ((3, 6), (5, 6), (7, 6), (3, 4))),
        SubnetStage(192, 2, "hard_swish", True, ((3, 6), (3, 6), (5, 6), (3, 3))),
    ),
    final_expand=1152,
    head=1536,
)


def build_subnet_classifier(subnet: Subnet, num_classes: int = 1000) -> nn.Module:
    """The subnet as a timm ``MobileNetV3`` ImageNet classifier (random weights).

    Head as in OFA: global pool, feature-mix 1x1 conv without bias or BN, hard-swish, linear.
    BN momentum 0.1 / eps 1e-5 as in the subnet configs (PyTorch defaults).
    """
    from timm.layers import get_act_layer
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.mobilenetv3 import MobileNetV3

    se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round_channels)
    return MobileNetV3(
        block_args=decode_arch_def(subnet.arch_def()),
        num_classes=num_classes,
        stem_size=subnet.stem,
        fix_stem=True,
        num_features=subnet.head,
        head_bias=False,
        act_layer=get_act_layer("hard_swish"),
        norm_layer=nn.BatchNorm2d,
        se_layer=se_layer,
        se_from_exp=True,
        round_chs_fn=round_channels,
    )


class TimmStagesEncoder(nn.Module):
    """Five features from a timm EfficientNet / MobileNetV3 (``conv_stem``, ``bn1``, ``blocks``).

    out1 = the stem (conv + BN + act) at stride 2; out2..out4 = the outputs of ``blocks[i]`` for
    ``i`` in ``taps``; out5 = ``bn2(conv_head(x))`` when the classifier has a BN'd conv head
    (EfficientNet), else the last stage (MobileNetV3's ``cn`` 1x1 expand stage).
    Submodule names are timm's, so a timm state dict loads into the encoder by name.
    """

    def __init__(self, classifier: nn.Module, taps: Sequence[int], use_conv_head: bool) -> None:
        super().__init__()
        if len(taps) != 3:
            raise ValueError(f"need 3 stage taps for out2..out4, got {list(taps)}")
        self.conv_stem = classifier.conv_stem
        self.bn1 = classifier.bn1
        self.blocks = classifier.blocks
        self.taps = tuple(int(t) for t in taps)
        self.use_conv_head = use_conv_head
        if use_conv_head:
            self.conv_head = classifier.conv_head
            self.bn2 = classifier.bn2
        if max(self.taps) >= len(self.blocks):
            raise ValueError(f"stage taps {self.taps} out of range for {len(self.blocks)} stages")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: normalised float (B, 3, H, W) -> [out1, ..., out5] at strides 2, 4, 8, 16, 32."""
        x = self.bn1(self.conv_stem(x))
        feats = [x]
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.taps:
                feats.append(x)
        if self.use_conv_head:
            x = self.bn2(self.conv_head(x))
        feats.append(x)
        return feats


class TorchvisionFeaturesEncoder(nn.Module):
    """Five features from a torchvision MobileNet's ``features`` sequence.

    ``taps`` are the indices of the ``features`` layers whose outputs are out1..out5 (the last
    must be the final layer). The module keeps the name ``features``, so torchvision's ImageNet
    state dicts load by name once the ``classifier.*`` keys are dropped.
    """

    def __init__(self, classifier: nn.Module, taps: Sequence[int]) -> None:
        super().__init__()
        self.features = classifier.features
        self.taps = tuple(int(t) for t in taps)
        if len(self.taps) != 5 or self.taps[-1] != len(self.features) - 1:
            raise ValueError(f"taps {self.taps} must be 5 indices ending at the last of {len(self.features)} layers")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: normalised float (B, 3, H, W) -> [out1, ..., out5] at strides 2, 4, 8, 16, 32."""
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return feats


def _out_channels(module: nn.Module) -> int:
    """Output channels of a stem/stage/layer: those of its last convolution.

    True for every layer the encoders tap: timm/torchvision blocks end with their projection
    convolution (squeeze-excite convolutions come before it), ConvBnAct/Conv2dNormActivation
    layers hold a single convolution. The forward test checks the result on real tensors.
    """
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(module).__name__} has no convolution to read its output channels from")
    return int(convs[-1].out_channels)


def feature_channels(encoder: nn.Module) -> tuple[int, ...]:
    """Channels of the encoder's five features (out1, ..., out5)."""
    if isinstance(encoder, TimmStagesEncoder):
        taps = [encoder.conv_stem] + [encoder.blocks[i] for i in encoder.taps]
        taps.append(encoder.conv_head if encoder.use_conv_head else encoder.blocks[-1])
    elif isinstance(encoder, TorchvisionFeaturesEncoder):
        taps = [encoder.features[i] for i in encoder.taps]
    else:
        raise TypeError(f"unknown encoder type {type(encoder).__name__}")
    return tuple(_out_channels(m) for m in taps)
