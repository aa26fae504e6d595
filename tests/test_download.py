"""Verified, resumable downloads against a local HTTP server on 127.0.0.1 (no internet needed)."""

import hashlib
import importlib
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from uniinstruct.teachers.download import Artifact, ChecksumError, DownloadError, download, sha256_file

DL = importlib.import_module("uniinstruct.teachers.download")

GOOD = random.Random(0).randbytes(300_000)
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
CORRUPT = GOOD[:1234] + bytes([GOOD[1234] ^ 0xFF]) + GOOD[1235:]
# path -> (behaviour, bytes served)
ROUTES = {
    "/good.bin": ("range", GOOD),
    "/corrupt.bin": ("range", CORRUPT),
    "/truncated.bin": ("truncate-first", GOOD),  # full Content-Length, but half the body on the first request
    "/flaky.bin": ("truncate-always", GOOD),     # half of what was asked, every time
    "/norange.bin": ("no-range", GOOD),          # ignores Range, always 200
    "/stall.bin": ("stall-first", GOOD),         # half the body, then a pause longer than the client's timeout
    "/nolength.bin": ("no-length-cut", GOOD),    # no Content-Length, and the connection closes after half the body
}


class FixtureHandler(BaseHTTPRequestHandler):
    """Serves ROUTES with `Range: bytes=N-` support; records (path, Range header) of every request in ``log``."""

    log: list[tuple[str, str | None]]

    def do_GET(self):
        prior = sum(path == self.path for path, _ in self.log)
        self.log.append((self.path, self.headers.get("Range")))
        if self.path not in ROUTES:
            self.send_error(404)
            return
        mode, data = ROUTES[self.path]
        ranged = self.headers.get("Range") is not None and mode != "no-range"
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if ranged else 0
        if start >= len(data) and ranged:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        if mode == "no-length-cut":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(len(body)))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if mode == "truncate-always" or (mode == "truncate-first" and prior == 0):
            body = body[: len(body) // 2]
            self.close_connection = True
        if mode == "stall-first" and prior == 0:
            self.wfile.write(body[: len(body) // 2])
            time.sleep(0.5)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def httpd():
    """A server on a free loopback port, shared by this module's tests, and its handler class."""
    handler = type("Handler", (FixtureHandler,), {"log": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd, handler
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def server(httpd, monkeypatch):
    """(base URL, request log emptied for this test); retries do not sleep."""
    monkeypatch.setattr(DL, "_BACKOFF_S", 0.0)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server, handler = httpd
    handler.log.clear()
    return f"http://127.0.0.1:{server.server_address[1]}", handler.log


def _artifact(base, path, sha256=GOOD_SHA, size=None):
    return Artifact(name=path.strip("/"), url=base + path, sha256=sha256, size=size)


def test_good_download_verifies_and_renames(server, tmp_path):
    base, log = server
    dest = tmp_path / "sub" / "good.bin"
    result = download(_artifact(base, "/good.bin", size=len(GOOD)), dest, chunk_size=64 << 10, timeout=5)
    assert dest.read_bytes() == GOOD
    assert result.path == dest and result.sha256 == GOOD_SHA == sha256_file(dest)
    assert result.bytes == len(GOOD) and not result.resumed and result.url == base + "/good.bin"
    assert [p.name for p in dest.parent.iterdir()] == ["good.bin"]  # no .part left
    assert log == [("/good.bin", None)]


def test_existing_verified_file_needs_no_request(server, tmp_path):
    base, log = server
    dest = tmp_path / "good.bin"
    download(_artifact(base, "/good.bin"), dest, timeout=5)
    again = download(_artifact(base, "/good.bin"), dest, timeout=5)
    assert len(log) == 1
    assert again.sha256 == GOOD_SHA and again.bytes == len(GOOD) and not again.resumed


def test_existing_wrong_file_is_replaced(server, tmp_path):
    base, log = server
    dest = tmp_path / "good.bin"
    dest.write_bytes(CORRUPT)
    assert download(_artifact(base, "/good.bin"), dest, timeout=5).sha256 == GOOD_SHA
    assert dest.read_bytes() == GOOD and len(log) == 1
    assert dest.with_name("good.bin.rejected").read_bytes() == CORRUPT      # the user's file is kept, not deleted


def test_corrupt_file_raises_and_leaves_nothing(server, tmp_path):
    base, _ = server
    dest = tmp_path / "corrupt.bin"
    with pytest.raises(ChecksumError) as err:
        download(_artifact(base, "/corrupt.bin"), dest, timeout=5)
    message = str(err.value)
    assert str(dest) in message and base + "/corrupt.bin" in message
    assert GOOD_SHA in message and hashlib.sha256(CORRUPT).hexdigest() in message
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_raises(server, tmp_path):
    base, _ = server
    with pytest.raises(ChecksumError, match=f"{len(GOOD) + 1} bytes"):
        download(_artifact(base, "/good.bin", size=len(GOOD) + 1), tmp_path / "good.bin", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_resumes_with_range(server, tmp_path):
    base, log = server
    # a broken read loses its last, incomplete chunk: 5000 divides the 150000 bytes sent, so all of them are kept
    result = download(_artifact(base, "/truncated.bin"), tmp_path / "t.bin", chunk_size=5000, timeout=5)
    assert log == [("/truncated.bin", None), ("/truncated.bin", f"bytes={len(GOOD) // 2}-")]
    assert result.resumed and result.sha256 == GOOD_SHA and (tmp_path / "t.bin").read_bytes() == GOOD


def test_read_timeout_resumes(server, tmp_path):
    base, log = server
    result = download(_artifact(base, "/stall.bin"), tmp_path / "s.bin", chunk_size=5000, timeout=0.2)
    assert log == [("/stall.bin", None), ("/stall.bin", f"bytes={len(GOOD) // 2}-")]
    assert result.resumed and result.sha256 == GOOD_SHA


def test_partial_file_is_resumed(server, tmp_path):
    base, log = server
    dest = tmp_path / "good.bin"
    dest.with_name("good.bin.part").write_bytes(GOOD[:100_000])
    result = download(_artifact(base, "/good.bin"), dest, timeout=5)
    assert log == [("/good.bin", "bytes=100000-")]
    assert result.resumed and result.sha256 == GOOD_SHA and dest.read_bytes() == GOOD
    assert not dest.with_name("good.bin.part").exists()


def test_complete_part_is_kept_on_416(server, tmp_path):
    base, log = server
    dest = tmp_path / "good.bin"
    dest.with_name("good.bin.part").write_bytes(GOOD)
    result = download(_artifact(base, "/good.bin"), dest, timeout=5)
    assert log == [("/good.bin", f"bytes={len(GOOD)}-")]
    assert result.resumed and dest.read_bytes() == GOOD


def test_oversized_part_restarts_on_416(server, tmp_path):
    base, log = server
    dest = tmp_path / "good.bin"
    dest.with_name("good.bin.part").write_bytes(GOOD + b"stale tail")
    result = download(_artifact(base, "/good.bin"), dest, timeout=5)
    assert log == [("/good.bin", f"bytes={len(GOOD) + 10}-"), ("/good.bin", None)]
    assert not result.resumed and dest.read_bytes() == GOOD


def test_server_without_range_support_restarts(server, tmp_path):
    base, log = server
    dest = tmp_path / "norange.bin"
    dest.with_name("norange.bin.part").write_bytes(b"x" * 50_000)  # not even a prefix: must be overwritten
    result = download(_artifact(base, "/norange.bin"), dest, timeout=5)
    assert log == [("/norange.bin", "bytes=50000-")]
    assert not result.resumed and result.sha256 == GOOD_SHA and dest.read_bytes() == GOOD


def test_retries_exhausted_keeps_part(server, tmp_path):
    base, log = server
    dest = tmp_path / "flaky.bin"
    with pytest.raises(DownloadError, match="after 2 attempt"):
        download(_artifact(base, "/flaky.bin"), dest, chunk_size=5000, timeout=5, retries=1)
    part = dest.with_name("flaky.bin.part")
    assert len(log) == 2 and not dest.exists()
    assert part.read_bytes() == GOOD[: len(GOOD) * 3 // 4]  # two halvings, kept for a later call to resume


def test_404_raises_download_error(server, tmp_path):
    base, log = server
    dest = tmp_path / "missing.bin"
    with pytest.raises(DownloadError, match="404") as err:
        download(_artifact(base, "/missing.bin"), dest, timeout=5)
    assert base + "/missing.bin" in str(err.value)
    assert len(log) == 1 and list(tmp_path.iterdir()) == []


def test_unknown_hash_downloads_and_returns_it(server, tmp_path):
    base, _ = server
    result = download(_artifact(base, "/good.bin", sha256=None), tmp_path / "good.bin", progress=True, timeout=5)
    assert result.sha256 == GOOD_SHA and result.bytes == len(GOOD)


def test_sha256_file_streams_blocks(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(GOOD * 4)  # 1.2 MB: more than one 1 MiB block
    assert sha256_file(path) == hashlib.sha256(GOOD * 4).hexdigest()


def test_fetch_pins_the_first_download_and_refuses_a_changed_file(httpd, tmp_path):
    """Artifacts without a published hash are pinned on first use; a later, different file is rejected."""
    from uniinstruct.teachers.registry import fetch, get

    server, _ = httpd
    url = f"http://127.0.0.1:{server.server_port}/tofu.bin"
    ROUTES["/tofu.bin"] = ("range", GOOD)
    artifact = Artifact("tofu", url, None)
    first = fetch(artifact, tmp_path, progress=False)
    record = (tmp_path / "tofu.bin.sha256.json")
    assert first.sha256 == GOOD_SHA and GOOD_SHA in record.read_text()
    (tmp_path / "tofu.bin").unlink()
    ROUTES["/tofu.bin"] = ("range", CORRUPT)             # the server now serves other bytes
    with pytest.raises(ChecksumError, match=GOOD_SHA) as err:
        fetch(artifact, tmp_path, progress=False)
    assert "trust on first use" in str(err.value) and "delete tofu.bin.sha256.json and retry" in str(err.value)
    assert not (tmp_path / "tofu.bin").exists() and not (tmp_path / "tofu.bin.part").exists()
    assert get("inception-2015-12-05").sha256.startswith("f58cb9b6")
    with pytest.raises(ValueError, match="unknown artifact 'edm'; valid: edm-cifar10-32x32-uncond-vp"):
        get("edm")


def test_a_cut_body_without_content_length_is_never_recorded(httpd, tmp_path):
    """No Content-Length, no known hash or size: the cut body is not kept, and no first-use hash is recorded (which
    would refuse the correct file forever)."""
    from uniinstruct.teachers.registry import fetch

    server, _ = httpd
    artifact = Artifact("nolength", f"http://127.0.0.1:{server.server_port}/nolength.bin", None)
    with pytest.raises(ChecksumError, match="sent no Content-Length"):
        fetch(artifact, tmp_path, progress=False)
    assert not list(tmp_path.iterdir())
    with_hash = Artifact("nolength", artifact.url, hashlib.sha256(GOOD).hexdigest())
    with pytest.raises(ChecksumError, match="failed verification"):     # a known hash still catches the cut
        download(with_hash, tmp_path / "x.bin", timeout=5, retries=0)
