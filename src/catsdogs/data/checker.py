"""The filter stage's workers: every class image of the archive checked in a process pool, the kept ones
written into the cleaned folder. Each worker opens the archive once and reads members straight from it;
a member larger than an image of `max_pixels` could be is never inflated (a zip bomb).
"""

from __future__ import annotations

import functools
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from catsdogs.data import archive as zipped
from catsdogs.data import images
from catsdogs.errors import UserError

_zip = None  # each worker process opens the archive once


def _open_in_worker(path: str) -> None:
    global _zip
    # Ctrl-C reaches the whole process group: the main process stops the pool and reports it once,
    # instead of every worker printing its own KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _zip = zipped.open_zip(path)


def _read(name: str) -> bytes:
    """A member's bytes; ArchiveError naming the member when the archive cannot give them."""
    try:
        return _zip.read(name)
    except RuntimeError as exc:  # zipfile's way of saying "encrypted"
        raise zipped.ArchiveError(f"{_zip.filename}: member {name} cannot be read ({exc})") from None
    except NotImplementedError as exc:
        raise zipped.ArchiveError(f"{_zip.filename}: member {name} uses an unsupported compression method "
                                  f"({exc})") from None
    except Exception as exc:  # noqa: BLE001 - BadZipFile (CRC), zlib.error, EOFError, OSError...
        raise zipped.ArchiveError(f"{_zip.filename}: member {name} is damaged ({type(exc).__name__}: {exc}); "
                                  "the archive is corrupt: delete it and download again") from None


def check_member(name: str, cls: str, size: int, read, out_dir: str, method: str, max_pixels: int) -> str | None:
    """Check one member of `size` bytes and write it into the cleaned folder if kept; the reason or None.
    `read()` gives its bytes, and is never called for a member larger than an image can be (a zip bomb)."""
    if size > images.max_file_bytes(max_pixels):
        return "too_large"
    data = read()
    reason = images.check(data, method, max_pixels)
    if reason is None:
        target = Path(out_dir, cls, Path(name).name)
        try:
            target.write_bytes(data)
        except OSError as exc:
            raise UserError(f"cannot write {Path(name).name} into the cleaned folder: {exc}") from None
    return reason


def _check_chunk(chunk, out_dir: str, method: str, max_pixels: int):
    """Check members and write the kept ones; returns (member, class, reason or None) per member."""
    return [(name, cls, check_member(name, cls, _zip.getinfo(name).file_size, functools.partial(_read, name),
                                     out_dir, method, max_pixels)) for name, cls in chunk]


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_archive(zip_path: Path, members: zipped.Members, out_dir: Path, method: str, max_pixels: int,
                   workers: int):
    """Check every class image of the archive, writing the kept ones into `out_dir`."""
    for cls in members.classes:
        (out_dir / cls).mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    chunks = list(_chunks(members.images, 64))
    results = []
    pool = ProcessPoolExecutor(workers, initializer=_open_in_worker, initargs=(str(zip_path),))
    try:
        check = functools.partial(_check_chunk, out_dir=str(out_dir), method=method, max_pixels=max_pixels)
        with tqdm(total=len(members.images), desc=f"filter ({method})", unit="img") as bar:
            for chunk_results in pool.map(check, chunks):
                results.extend(chunk_results)
                bar.update(len(chunk_results))
    except BaseException:  # an error or Ctrl-C: stop now, not after every chunk already queued
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return results
