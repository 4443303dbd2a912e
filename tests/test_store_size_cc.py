"""benchmarks/store_size_cc.py: the stored-pseudo-label CC on maps with known answers."""

from __future__ import annotations

import importlib.util

import torch

from pipeline_copy import REPO

_spec = importlib.util.spec_from_file_location("store_size_cc", REPO / "benchmarks/store_size_cc.py")
store_size_cc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(store_size_cc)


def test_smooth_maps_survive_and_noise_does_not():
    yy, xx = torch.meshgrid(torch.arange(192.0), torch.arange(192.0), indexing="ij")
    blob = torch.exp(-((yy - 80) ** 2 + (xx - 110) ** 2) / (2 * 20.0**2))
    # stored at the output size nothing is resized: only the uint8 quantisation, CC above 0.9999
    same = store_size_cc.store_cc(blob[None], (192, 192))
    assert same["at_store"][0] > 0.9999 and same["round_trip"][0] > 0.9999
    half = store_size_cc.store_cc(blob[None], (96, 96))
    assert half["round_trip"][0] > 0.999
    # pixel noise has nothing a half-size store can keep
    noise = torch.rand(1, 192, 192, generator=torch.Generator().manual_seed(0))
    assert store_size_cc.store_cc(noise, (96, 96))["round_trip"][0] < 0.9
