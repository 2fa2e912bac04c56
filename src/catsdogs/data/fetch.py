"""Download (or copy) the dataset archive so that its destination only ever holds a verified file.

Over HTTP the bytes go to a partial file outside the destination's folder, so an interrupted download
neither leaves a half archive in `data/raw/` nor is lost: the next attempt, or the next run, resumes it.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from catsdogs.atomic import atomic_path
from catsdogs.data import packing
from catsdogs.errors import UserError, first_line

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_WAIT = 60.0  # seconds: the longest wait between attempts (download.retries: 20 would otherwise wait six days)
ALLOWED = "http://, https://, file:// or a local path"

# What the network can throw at a read: socket errors and timeouts are OSError (URLError included),
# a garbled or cut-short response is an HTTPException.
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


class DownloadError(UserError):
    """The archive could not be fetched or did not match what was expected."""


class _Transient(Exception):
    """A failure worth another attempt, which resumes from the bytes already on disk."""


def fetch(
    url: str,
    dest: Path,
    *,
    size: int | None,
    sha256: str | None,
    timeout: float,
    retries: int,
    partial_dir: Path,
    progress: bool = True,
    backoff: float = 1.0,
) -> str:
    """Fetch `url` to `dest`; return the SHA-256 hex digest of what was written.

    `dest` appears only once the whole file has arrived and matches `size` and `sha256` (when given);
    on any failure an existing `dest` is left as it was.
    """
    dest = Path(dest)
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _fetch_http(url, dest, size, sha256, timeout, retries, Path(partial_dir), progress, backoff)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(f"{url}: file:// URLs must name a local file (host {parts.netloc!r} given)")
        source = Path(urllib.request.url2pathname(parts.path))
    elif scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # "C:\..." parses as scheme "c"
        source = Path(url)
    else:
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r}; use {ALLOWED}")
    return _copy_local(source, dest, size, sha256, progress)


def _split(url: str) -> urllib.parse.SplitResult:
    """`url` taken apart, or one DownloadError saying what is wrong with it: a malformed URL is the user's to
    fix, not a network failure to retry (urllib would report a missing host or a space as one)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise DownloadError(f"{url}: not a valid URL ({first_line(exc)}); use {ALLOWED}") from None
    if parts.scheme.lower() in ("http", "https"):
        if any(c.isspace() or not c.isprintable() for c in url):
            raise DownloadError(f"{url!r}: a URL cannot hold spaces or control characters (write a space as %20)")
        if not parts.hostname:
            raise DownloadError(f"{url}: no host name in the URL; use {ALLOWED}")
    return parts


def _fetch_http(url, dest, size, sha256, timeout, retries, partial_dir, progress, backoff) -> str:
    partial_dir.mkdir(parents=True, exist_ok=True)
    part = partial_dir / (dest.name + ".part")
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            digest = _attempt(url, part, size, timeout, progress)
            break
        except _Transient as exc:
            if attempt == retries:
                raise DownloadError(f"{url}: failed after {attempts} attempts; last error: {exc}") from None
            delay = min(backoff * 2**attempt, MAX_WAIT)
            log.info("retry %d/%d after error: %s (waiting %.1f s)", attempt + 1, retries, exc, delay)
            time.sleep(delay)

    try:
        _verify(part, digest, size, sha256, url)
    except DownloadError:
        part.unlink(missing_ok=True)  # bad data: resuming it would only reproduce the mismatch
        raise
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(part, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # partial_dir is on another file system: copy beside dest, then rename, so dest is still atomic.
        with atomic_path(dest) as tmp:
            shutil.copyfile(part, tmp)
        part.unlink()
    return digest


def _attempt(url: str, part: Path, size: int | None, timeout: float, progress: bool) -> str:
    """One request, resuming `part` when the server allows it; return the SHA-256 of the whole of `part`."""
    offset = part.stat().st_size if part.exists() else 0
    resp = _request(url, offset, timeout)
    if resp is None:
        log.info("server refused to resume from byte %d (HTTP 416); starting over", offset)
        part.unlink()
        offset = 0
        resp = _request(url, 0, timeout)

    with resp:
        if offset and resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Transient(f"asked to resume from byte {offset}, server sent from byte {start}")
            log.info("resuming %s from byte %d", part.name, offset)
            hasher = _hash_file(part)
            mode = "ab"
        else:
            if offset:
                log.info("server ignored the range request; restarting from byte 0")
            offset = 0
            hasher = hashlib.sha256()
            mode = "wb"

        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = offset + length if length is not None else size
        received = 0
        with open(part, mode) as out, _bar(total, offset, part.name, progress) as bar:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except _NETWORK_ERRORS as exc:
                    raise _Transient(_describe(exc)) from exc
                if not chunk:
                    break
                out.write(chunk)
                hasher.update(chunk)
                bar.update(len(chunk))
                received += len(chunk)
    # http.client reports a connection closed mid-body as a plain end of data.
    if length is not None and received < length:
        raise _Transient(f"connection closed after {offset + received} of {offset + length} bytes")
    return hasher.hexdigest()


def _request(url: str, offset: int, timeout: float):
    """Open `url` from byte `offset`; None means HTTP 416: the partial file is useless, start over."""
    headers = {"User-Agent": "catsdogs-fetch"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 429 or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        if exc.code == 416 and offset:
            return None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except _NETWORK_ERRORS as exc:
        raise _Transient(_describe(exc)) from exc


def _copy_local(source: Path, dest: Path, size: int | None, sha256: str | None, progress: bool) -> str:
    if source.is_dir():
        return _pack_local(source, dest, size, sha256)
    if not source.is_file():
        raise DownloadError(f"{source}: no such file or folder")
    hasher = hashlib.sha256()
    with atomic_path(dest) as tmp:
        bar = _bar(source.stat().st_size, 0, dest.name, progress)
        with open(source, "rb") as src, open(tmp, "wb") as out, bar:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                bar.update(len(chunk))
        _verify(tmp, hasher.hexdigest(), size, sha256, str(source))
    return hasher.hexdigest()


def _pack_local(folder: Path, dest: Path, size: int | None, sha256: str | None) -> str:
    """A folder of class folders, packed into a zip whose bytes depend only on its files (catsdogs.data.packing),
    then verified as a copied archive is: `size` and `sha256` can pin a folder's data version too."""
    with atomic_path(dest) as tmp:
        hidden = packing.pack(folder, tmp)
        digest = _hash_file(tmp).hexdigest()
        _verify(tmp, digest, size, sha256, str(folder))
    if hidden:
        log.info("packed %s leaving out %d hidden files and folders (%s)", folder, len(hidden), ", ".join(hidden[:3])
                 + (", ..." if len(hidden) > 3 else ""))
    return digest


def _verify(path: Path, digest: str, size: int | None, sha256: str | None, source: str) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"{source}: expected {size} bytes, got {actual}")
    if sha256 is not None and digest != sha256.lower():
        raise DownloadError(f"{source}: SHA-256 mismatch: expected {sha256.lower()}, got {digest}")
    if sha256 is not None:
        log.info("verified sha256 %s (%d bytes)", digest, actual)
    else:
        log.info("sha256 %s (%d bytes; no expected digest given, not checked)", digest, actual)


def _hash_file(path: Path):
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", header or "")
    return int(match.group(1)) if match else None


def _describe(exc: BaseException) -> str:
    """URLError hides the socket error in .reason; show that, and the type when the message is empty."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _bar(total: int | None, initial: int, name: str, progress: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not progress)
