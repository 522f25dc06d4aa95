"""MNIST fetched as Keras fetches it: `load_mnist()` without a path and `pyai train gan --data
mnist` download mnist.npz once into the cache folder, check its SHA-256 and write it atomically.

The tests serve a small generated mnist.npz from an HTTP server on 127.0.0.1 (PYAI_MNIST_URL,
with its own hash in PYAI_MNIST_SHA256) and count the requests it answers.
"""

import hashlib
import http.server
import io
import os
import socket
import threading

import numpy as np
import pytest
from PIL import Image

from pyai import data
from pyai.cli import main
from pyai.images import grid_size


def small_mnist(rng, count=64):
    buffer = io.BytesIO()
    arrays = {f"x_{split}": rng.integers(0, 256, (count, 28, 28), dtype=np.uint8) for split in ("train", "test")}
    arrays |= {f"y_{split}": rng.integers(0, 10, count, dtype=np.uint8) for split in ("train", "test")}
    np.savez(buffer, **arrays)
    return buffer.getvalue(), arrays


class Server:
    """Serves `body` at /mnist.npz on 127.0.0.1 from a thread; `requests` counts the GETs."""

    def __init__(self, body):
        self.body, self.requests = body, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/mnist.npz"
        self.thread = threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def served(rng, tmp_path, monkeypatch):
    body, arrays = small_mnist(rng)
    server = Server(body)
    monkeypatch.setenv("PYAI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYAI_MNIST_URL", server.url)
    monkeypatch.setenv("PYAI_MNIST_SHA256", hashlib.sha256(body).hexdigest())
    yield server, arrays
    server.close()


def test_the_default_url_and_hash_are_keras_own():
    assert data.MNIST_URL == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
    assert data.MNIST_SHA256 == "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


def test_load_mnist_without_a_path_downloads_once_into_the_cache(served, tmp_path):
    server, arrays = served
    for _ in range(2):
        images, labels = data.load_mnist(split="test")
        assert np.array_equal(images, arrays["x_test"].astype(np.float32) / np.float32(255))
        assert np.array_equal(labels, arrays["y_test"])
    assert server.requests == 1, "the cached file was downloaded again"
    assert sorted(os.listdir(tmp_path / "cache")) == ["mnist.npz"], "a temporary file was left behind"


def test_a_cached_file_that_does_not_match_is_downloaded_again(served, tmp_path):
    server, _ = served
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mnist.npz").write_bytes(b"truncated")
    data.load_mnist()
    assert server.requests == 1 and data.file_sha256(tmp_path / "cache" / "mnist.npz") == os.environ["PYAI_MNIST_SHA256"]


def test_a_download_with_another_hash_is_refused_and_not_kept(served, tmp_path, monkeypatch):
    server, _ = served
    monkeypatch.delenv("PYAI_MNIST_SHA256")   # Keras's hash, which the small file does not have
    with pytest.raises(ValueError, match=f"^MNIST {server.url}: the downloaded file's SHA-256 is "
                                         f"[0-9a-f]{{64}}, expected {data.MNIST_SHA256}; it was not kept"):
        data.load_mnist()
    assert os.listdir(tmp_path / "cache") == []


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist.npz"


def test_offline_train_gan_data_mnist_is_one_line_naming_the_url_and_data_path(capsys, tmp_path, monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("PYAI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYAI_MNIST_URL", url)
    assert main(["train", "gan", "--data", "mnist", "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pyai: error: MNIST: cannot download {url} ("), lines
    assert "--data PATH" in lines[0]
    assert os.listdir(tmp_path / "cache") == []


def test_train_gan_data_mnist_trains_on_the_downloaded_file(served, capsys, tmp_path):
    server, _ = served
    assert main(["train", "gan", "--data", "mnist", "--epochs", "1", "--out", str(tmp_path / "out")]) == 0
    assert server.requests == 1 and "trained 1 epochs" in capsys.readouterr().out
    assert Image.open(tmp_path / "out/samples_epoch_001.png").size == grid_size(64, (28, 28))
