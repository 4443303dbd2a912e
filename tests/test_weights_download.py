"""pretrained: true downloads missing ImageNet weights the way torchvision and timm do, into their
usual caches, when the network is reachable; offline (HF_HUB_OFFLINE / SEMIPKD_OFFLINE) or with
the host unreachable it fails with the one message that lists where it looked and why nothing was
downloaded. The "network" here is a local HTTP server: no test reaches outside the machine.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from semipkd.models import weights as W


@pytest.fixture()
def server(tmp_path):
    """A local HTTP server over tmp_path/www that records the paths it was asked for."""
    root = tmp_path / "www"
    root.mkdir()
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):  # noqa: N802 (http.server's name)
            asked.append(self.path)
            super().do_GET()

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, asked
    httpd.shutdown()


@pytest.fixture()
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("SEMIPKD_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_missing_file_is_downloaded_into_the_torch_hub_cache_and_found_there_next_time(server, caches):
    url, root, asked = server
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, root / "net-abc123.pth")
    source = W.WeightSource(hub_files=("net-abc123.pth",), urls=(f"{url}/net-abc123.pth",))
    path = W.find_weight_file("net", source)
    assert path == caches / "torch/hub/checkpoints/net-abc123.pth"
    assert torch.equal(W.read_state_dict(path)["w"], state["w"])
    assert asked == ["/net-abc123.pth"]
    # the second lookup finds the cached file: no second request
    assert W.find_weight_file("net", source) == path and asked == ["/net-abc123.pth"]


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "SEMIPKD_OFFLINE"])
def test_offline_means_no_request_and_a_message_that_says_so(server, caches, monkeypatch, var):
    url, root, asked = server
    (root / "net.pth").write_bytes(b"x")
    monkeypatch.setenv(var, "1")
    source = W.WeightSource(hub_files=("net.pth",), urls=(f"{url}/net.pth",), hf_repos=("timm/net.in1k",))
    with pytest.raises(FileNotFoundError) as info:
        W.find_weight_file("net", source)
    msg = str(info.value)
    assert "torch hub cache" in msg and "Hugging Face cache (timm/net.in1k)" in msg
    assert "downloads are off (HF_HUB_OFFLINE or SEMIPKD_OFFLINE is set)" in msg
    assert asked == []


def test_an_unreachable_host_fails_fast_naming_it(caches):
    port = _free_port()  # nothing listens there
    source = W.WeightSource(hub_files=("net.pth",), urls=(f"http://127.0.0.1:{port}/net.pth",))
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match=f"127.0.0.1:{port} unreachable"):
        W.find_weight_file("net", source)
    assert time.monotonic() - t0 < W.PROBE_TIMEOUT_S + 2


def test_a_failed_download_leaves_no_file_and_says_why(server, caches):
    url, _root, _asked = server
    source = W.WeightSource(hub_files=("gone.pth",), urls=(f"{url}/gone.pth",))  # 404
    with pytest.raises(FileNotFoundError, match="gone.pth: HTTPError"):
        W.find_weight_file("gone", source)
    assert not list((caches / "torch/hub/checkpoints").glob("*"))


def test_timm_weights_come_through_hf_hub_download(caches, monkeypatch, server):
    """timm's path: huggingface_hub.hf_hub_download(repo, "model.safetensors") into the HF cache."""
    import huggingface_hub

    url, _root, _asked = server
    monkeypatch.setenv("HF_ENDPOINT", url)  # reachable: the probe connects to the local server
    calls = []
    fake = caches / "hf/model.safetensors"

    def hf_hub_download(repo_id, filename):
        calls.append((repo_id, filename))
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_bytes(b"weights")
        return str(fake)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    source = W.WeightSource(hub_files=("legacy.pth",), hf_repos=("timm/tf_efficientnet_b4.ns_jft_in1k",))
    assert W.find_weight_file("efficientnet_b4", source) == fake
    assert calls == [("timm/tf_efficientnet_b4.ns_jft_in1k", "model.safetensors")]


def test_registry_sources_name_torchvisions_urls():
    from semipkd.models import get_backbone

    for name in ("mobilenet_v2", "mobilenet_v3_large"):
        src = get_backbone(name).weights
        assert src.urls and all(u.startswith("https://download.pytorch.org/models/") for u in src.urls)
        assert {Path(u).name for u in src.urls} <= set(src.hub_files)
    assert get_backbone("efficientnet_b4").weights.hf_repos  # timm's HF repositories
