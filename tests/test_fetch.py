"""fetch() against a loopback HTTP server that misbehaves on demand: drops, 5xx, 404, bad bodies, silence."""

from __future__ import annotations

import hashlib
import http.server
import logging
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

from catsdogs.data.fetch import DownloadError, fetch

DATA = random.Random(1234).randbytes(300_000)
DATA_SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class Behaviour:
    """How the test server answers; the counters apply to the first N requests only."""

    range_support: bool = True
    drop_after: int | None = None  # close the socket after this many body bytes...
    drop_count: int = 0  # ...for this many requests
    fail_status: int | None = None  # answer with this status...
    fail_count: int = 0  # ...for this many requests
    body: bytes = DATA  # what is served (a wrong body makes the digest or the size mismatch)
    hang: bool = False  # never answer


@dataclass
class Server:
    url: str = ""
    behaviour: Behaviour = field(default_factory=Behaviour)
    ranges: list = field(default_factory=list)  # the Range header of each request, None when absent
    release: threading.Event = field(default_factory=threading.Event)  # ends a hanging handler at teardown


def _handler(server: Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            b = server.behaviour
            n = len(server.ranges)
            server.ranges.append(self.headers.get("Range"))
            if b.hang:
                server.release.wait(10)
                return
            if b.fail_status is not None and n < b.fail_count:
                self.send_error(b.fail_status)
                return
            body, status, extra = b.body, 200, {}
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if b.range_support and match:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, extra = 206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
                body = body[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if b.drop_after is not None and n < b.drop_count:
                self.wfile.write(body[: b.drop_after])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    srv = Server()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(srv))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{httpd.server_address[1]}/archive.zip"
    yield srv
    srv.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def paths(tmp_path):
    """dest in data/raw/, partials elsewhere, as the pipeline lays them out."""
    return tmp_path / "data" / "raw" / "archive.zip", tmp_path / "partial"


def _fetch(url, dest, partial_dir, **kwargs):
    options = dict(size=len(DATA), sha256=DATA_SHA, timeout=5, retries=3, progress=False, backoff=0)
    options.update(kwargs)
    return fetch(url, dest, partial_dir=partial_dir, **options)


def _no_leftovers(dest, partial_dir):
    """Neither a .part file nor a temporary file beside dest survives."""
    assert not (partial_dir / (dest.name + ".part")).exists()
    if dest.parent.exists():
        assert [p.name for p in dest.parent.iterdir() if p.name != dest.name] == []


def test_plain_download(server, paths):
    dest, partial_dir = paths
    digest = _fetch(server.url, dest, partial_dir)
    assert dest.read_bytes() == DATA
    assert digest == DATA_SHA
    assert server.ranges == [None]
    _no_leftovers(dest, partial_dir)


def test_dropped_connection_resumes_with_range(server, paths, caplog):
    dest, partial_dir = paths
    server.behaviour.drop_after, server.behaviour.drop_count = 100_000, 1
    with caplog.at_level(logging.INFO, logger="catsdogs.data.fetch"):
        digest = _fetch(server.url, dest, partial_dir)
    assert dest.read_bytes() == DATA
    assert digest == DATA_SHA
    assert server.ranges == [None, "bytes=100000-"]
    assert "retry 1/3" in caplog.text
    assert "from byte 100000" in caplog.text
    assert "verified sha256" in caplog.text
    _no_leftovers(dest, partial_dir)


def test_dropped_connection_twice_resumes_each_time(server, paths):
    dest, partial_dir = paths
    server.behaviour.drop_after, server.behaviour.drop_count = 100_000, 2
    assert _fetch(server.url, dest, partial_dir) == DATA_SHA
    assert server.ranges == [None, "bytes=100000-", "bytes=200000-"]
    assert dest.read_bytes() == DATA


def test_dropped_connection_without_range_restarts(server, paths):
    dest, partial_dir = paths
    b = server.behaviour
    b.range_support, b.drop_after, b.drop_count = False, 100_000, 2
    assert _fetch(server.url, dest, partial_dir) == DATA_SHA
    assert dest.read_bytes() == DATA
    assert len(server.ranges) == 3
    assert server.ranges[1:] == ["bytes=100000-", "bytes=100000-"]  # asked, but got the whole file
    _no_leftovers(dest, partial_dir)


def test_stale_partial_from_earlier_run_is_resumed(server, paths):
    dest, partial_dir = paths
    partial_dir.mkdir()
    (partial_dir / "archive.zip.part").write_bytes(DATA[:123_456])
    assert _fetch(server.url, dest, partial_dir) == DATA_SHA
    assert server.ranges == ["bytes=123456-"]
    assert dest.read_bytes() == DATA
    _no_leftovers(dest, partial_dir)


def test_stale_partial_without_range_support_is_replaced(server, paths):
    dest, partial_dir = paths
    server.behaviour.range_support = False
    partial_dir.mkdir()
    (partial_dir / "archive.zip.part").write_bytes(b"x" * 50_000)
    assert _fetch(server.url, dest, partial_dir) == DATA_SHA
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("stale", [DATA, DATA + b"extra"], ids=["complete", "too_long"])
def test_partial_at_or_past_the_end_restarts_after_416(server, paths, stale):
    dest, partial_dir = paths
    partial_dir.mkdir()
    (partial_dir / "archive.zip.part").write_bytes(stale)
    assert _fetch(server.url, dest, partial_dir) == DATA_SHA
    assert server.ranges == [f"bytes={len(stale)}-", None]
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_status_is_retried(server, paths, status):
    dest, partial_dir = paths
    server.behaviour.fail_status, server.behaviour.fail_count = status, 2
    assert _fetch(server.url, dest, partial_dir, retries=3) == DATA_SHA
    assert len(server.ranges) == 3
    assert dest.read_bytes() == DATA


def test_persistent_500_gives_up_after_all_attempts(server, paths):
    dest, partial_dir = paths
    server.behaviour.fail_status, server.behaviour.fail_count = 500, 10**6
    with pytest.raises(DownloadError, match="3 attempts") as info:
        _fetch(server.url, dest, partial_dir, retries=2)
    assert "500" in str(info.value)
    assert server.url in str(info.value)
    assert len(server.ranges) == 3
    assert not dest.exists()


def test_404_is_not_retried(server, paths):
    dest, partial_dir = paths
    server.behaviour.fail_status, server.behaviour.fail_count = 404, 10**6
    with pytest.raises(DownloadError, match="404") as info:
        _fetch(server.url, dest, partial_dir, retries=3)
    assert server.url in str(info.value)
    assert len(server.ranges) == 1
    assert not dest.exists()


def test_wrong_sha256_is_rejected_and_partial_removed(server, paths):
    dest, partial_dir = paths
    bad = bytearray(DATA)
    bad[1000] ^= 0xFF
    server.behaviour.body = bytes(bad)
    with pytest.raises(DownloadError) as info:
        _fetch(server.url, dest, partial_dir)
    message = str(info.value)
    assert DATA_SHA in message
    assert hashlib.sha256(bad).hexdigest() in message
    assert not dest.exists()
    _no_leftovers(dest, partial_dir)


def test_wrong_size_is_rejected(server, paths):
    dest, partial_dir = paths
    server.behaviour.body = DATA[:-10]  # consistent Content-Length, but not the file we expect
    with pytest.raises(DownloadError, match=f"expected {len(DATA)} bytes, got {len(DATA) - 10}"):
        _fetch(server.url, dest, partial_dir, sha256=None)
    assert not dest.exists()
    _no_leftovers(dest, partial_dir)


def test_server_that_never_answers_times_out(server, paths):
    dest, partial_dir = paths
    server.behaviour.hang = True
    started = time.monotonic()
    with pytest.raises(DownloadError, match="2 attempts") as info:
        _fetch(server.url, dest, partial_dir, timeout=0.5, retries=1)
    assert time.monotonic() - started < 4
    assert "timed out" in str(info.value).lower()
    assert len(server.ranges) == 2
    assert not dest.exists()


@pytest.mark.parametrize("failure", ["sha256", "404"])
def test_existing_dest_is_untouched_by_a_failed_fetch(server, paths, failure):
    dest, partial_dir = paths
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"the archive from last time")
    if failure == "404":
        server.behaviour.fail_status, server.behaviour.fail_count = 404, 1
    with pytest.raises(DownloadError):
        _fetch(server.url, dest, partial_dir, sha256="0" * 64)
    assert dest.read_bytes() == b"the archive from last time"
    _no_leftovers(dest, partial_dir)


def test_local_relative_path_is_copied_and_verified(tmp_path, monkeypatch, paths):
    dest, partial_dir = paths
    monkeypatch.chdir(tmp_path)
    (tmp_path / "source.zip").write_bytes(DATA)
    assert _fetch("source.zip", dest, partial_dir) == DATA_SHA
    assert dest.read_bytes() == DATA
    assert (tmp_path / "source.zip").read_bytes() == DATA
    assert not partial_dir.exists()  # local copies go through a temp file beside dest instead
    _no_leftovers(dest, partial_dir)


def test_file_url_is_copied_and_verified(tmp_path, paths):
    dest, partial_dir = paths
    source = tmp_path / "some dir" / "source.zip"
    source.parent.mkdir()
    source.write_bytes(DATA)
    assert _fetch(source.as_uri(), dest, partial_dir) == DATA_SHA
    assert dest.read_bytes() == DATA
    _no_leftovers(dest, partial_dir)


def test_local_copy_with_wrong_sha256_leaves_nothing(tmp_path, paths):
    dest, partial_dir = paths
    source = tmp_path / "source.zip"
    source.write_bytes(DATA)
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        _fetch(str(source), dest, partial_dir, sha256="0" * 64)
    assert not dest.exists()
    _no_leftovers(dest, partial_dir)


def test_missing_local_path_is_named(tmp_path, paths):
    dest, partial_dir = paths
    missing = tmp_path / "nowhere" / "archive.zip"
    with pytest.raises(DownloadError, match=re.escape(str(missing))):
        _fetch(str(missing), dest, partial_dir)
    assert not dest.exists()


@pytest.mark.parametrize("url", ["ftp://example.com/archive.zip", "s3://bucket/archive.zip"])
def test_unsupported_scheme(paths, url):
    dest, partial_dir = paths
    with pytest.raises(DownloadError, match="unsupported URL scheme") as info:
        _fetch(url, dest, partial_dir)
    assert url in str(info.value)
    assert "https://" in str(info.value)
    assert not dest.exists()


@pytest.fixture
def delays(monkeypatch) -> list[float]:
    """The waits between attempts, recorded instead of slept."""
    waited = []
    monkeypatch.setattr(time, "sleep", waited.append)
    return waited


def test_retries_wait_twice_as_long_each_time(server, paths, delays):
    dest, partial_dir = paths
    server.behaviour.fail_status, server.behaviour.fail_count = 503, 3
    assert _fetch(server.url, dest, partial_dir, retries=3, backoff=0.5) == DATA_SHA
    assert delays == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("url, line", [
    ("http://[::1", "http://[::1: not a valid URL (Invalid IPv6 URL); use http://, https://, file:// or a local path"),
    ("http://host:port/a.zip", "http://host:port/a.zip: not a valid URL (Port could not be cast to integer value as "
                               "'port'); use http://, https://, file:// or a local path"),
    ("http:///archive.zip", "http:///archive.zip: no host name in the URL; use http://, https://, file:// or a "
                            "local path"),
    ("https://example.com/my archive.zip", "'https://example.com/my archive.zip': a URL cannot hold spaces or "
                                           "control characters (write a space as %20)"),
    ("https://example.com/a.zip ", "'https://example.com/a.zip ': a URL cannot hold spaces or control characters "
                                   "(write a space as %20)"),
])
def test_a_malformed_url_is_one_line_at_once_never_retried(paths, delays, url, line):
    """Issue 17: these were a ValueError, or retried as network failures for about 31 s."""
    dest, partial_dir = paths
    with pytest.raises(DownloadError) as info:
        _fetch(url, dest, partial_dir, retries=5, backoff=1.0)
    assert str(info.value) == line
    assert delays == [] and not dest.exists() and not partial_dir.exists()


def test_the_wait_between_attempts_stops_growing_at_a_minute(server, paths, delays):
    """download.retries: 20 doubled the wait to six days before the last attempt."""
    dest, partial_dir = paths
    server.behaviour.fail_status, server.behaviour.fail_count = 503, 9
    assert _fetch(server.url, dest, partial_dir, retries=9, backoff=1.0) == DATA_SHA
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
