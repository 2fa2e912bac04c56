"""Every image decoded once into a uint8 array on disk, reused by later runs, stages and experiments.

The tutorial decodes and resizes every JPEG again in every epoch. Here each image is decoded once per
(files, image size, decoder), in parallel, into a .npy file; stages read it memory-mapped, so the OS keeps it
in RAM when it fits and pages it when it does not. The file is named after the images' paths and content
hashes, not their modification times: the fresh copy a queued experiment runs in has new mtimes and the same
images, and reuses it from the per-user cache folder (catsdogs.caches). Two runs that need the same file at
once take turns on a lock beside it: one decodes, the other then reuses. The cache heals itself: a file that
is damaged (cut short by a full disk or an interrupted copy) or foreign (another shape) is logged and decoded
again. It keeps the KEEP files used last; `catsdogs cache --clear` empties it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from catsdogs import atomic, caches
from catsdogs.data import images, splits

log = logging.getLogger(__name__)

KEEP = 4  # cache files kept, the most recently used: a sweep over image sizes, or a few data versions
PATTERN = "images-*.npy"


def content_key(paths: list[str], digests: list[str], extra: str = "") -> str:
    """A short key for these files' paths (within their folder) and content hashes, plus `extra`: the same
    in every copy of the folder, whatever its mtimes."""
    if len(paths) != len(digests):
        raise ValueError(f"{len(paths)} paths but {len(digests)} content hashes")
    digest = hashlib.sha256(extra.encode())
    for path, content in zip(paths, digests):
        digest.update(f"\0{path}\0{content}".encode())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: str | os.PathLike, paths: list[str], digests: list[str], size) -> Path:
    """Named after the image size, every file's path and content hash, and the decoder's version: a changed
    image, size or decoder gets a new file; a copy of the same images finds the same one."""
    height, width = size
    key = content_key(paths, digests, f"{height}x{width}\0{images.DECODER}")
    return Path(cache_dir) / f"images-{height}x{width}-{key}.npy"


def problem(cache: Path, shape: tuple[int, ...]) -> str | None:
    """Why the cache file cannot be used as the decoded images of `shape`, or None if it can: it must be a
    .npy file of uint8 of that shape, and exactly as long as its header says (not cut short)."""
    try:
        with cache.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            found, fortran_order, dtype = read_header(f)
            data_start = f.tell()
    except (ValueError, OSError, EOFError) as exc:
        return f"not a .npy file: {exc}"
    if dtype != np.uint8 or tuple(found) != tuple(shape) or fortran_order:
        return f"holds {dtype} {list(found)}, not uint8 {list(shape)}"
    expected = data_start + int(np.prod(shape))
    if cache.stat().st_size != expected:
        return f"{cache.stat().st_size:,} bytes where {expected:,} are expected"
    return None


@contextlib.contextmanager
def locked(cache: Path):
    """Hold an exclusive lock on `cache`'s lock file (fcntl.flock, released when the process ends, however it
    ends): a second run that needs the same file waits here. The holder removes the lock file as it leaves,
    so a lock is good only while the path still names the file locked; otherwise lock again."""
    lock = cache.with_name(cache.name + ".lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another run that is decoding the same images into %s", cache)
                fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(lock)):
                    break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before the lock is released: a waiter then sees it gone and locks anew
        os.close(fd)


def evict(cache_dir: Path, keep: int | None = None) -> None:
    """Remove all but the `keep` (default KEEP) cache files used last (reuse touches a file). A run still
    reading a removed file keeps its mapping: the data goes only when the last reader closes it."""
    keep = KEEP if keep is None else keep

    def used(path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except FileNotFoundError:  # removed meanwhile by another run
            return 0

    for stale in sorted(cache_dir.glob(PATTERN), key=used, reverse=True)[keep:]:
        log.info("removing %s, the least recently used of more than %d decoded-image caches", stale, keep)
        stale.unlink(missing_ok=True)


def load(directory: str | os.PathLike, paths: list[str], size, cache_dir: str | os.PathLike | None = None,
         mode: str = "mmap", digests: list[str] | None = None) -> np.ndarray:
    """All `paths` decoded to uint8 (N, height, width, 3), from the cache, decoding what is missing.

    `cache_dir`: None is the folder every experiment shares (catsdogs.caches), created when first needed.

    `digests`: each path's content hash (splits.content_digests), when the caller has them already (the
    train stage writes them to split.csv, later stages read them from there); otherwise computed here.
    `mode`: "mmap" maps the cache file: the OS keeps the pages it can in RAM, so data larger than memory
    still trains (slower once it no longer fits, as random batches then read from disk). "memory" reads it
    all into RAM first: the fastest batches, but the whole array must fit.
    """
    directory, size = Path(directory), tuple(size)
    cache_dir = caches.folder(caches.IMAGES) if cache_dir is None else Path(cache_dir)
    if digests is None:
        digests = splits.content_digests(directory, paths)
    cache = cache_path(cache_dir, paths, digests, size)
    shape = (len(paths), *size, 3)
    mmap_mode = "r" if mode == "mmap" else None
    if cache.exists() and problem(cache, shape) is None:
        with contextlib.suppress(FileNotFoundError):  # unless evicted by another run this very moment
            return reuse(cache, mmap_mode)

    cache_dir.mkdir(parents=True, exist_ok=True)
    with locked(cache):
        if cache.exists():  # written by another run while this one waited, or damaged
            why = problem(cache, shape)
            if why is None:
                return reuse(cache, mmap_mode)
            log.info("decoding the images again: the cache %s is damaged (%s)", cache, why)
        atomic.remove_leftovers(cache)  # a decode killed midway (it held this lock, so it is over)
        started = time.perf_counter()
        with atomic.atomic_path(cache, suffix=".npy") as tmp:  # an interrupted decode is never taken for a cache
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)

            def decode_into(i: int) -> None:
                array[i] = images.decode_file(directory / paths[i], size)

            # Pillow releases the GIL while decoding and resizing, so threads use every core.
            with ThreadPoolExecutor(os.cpu_count()) as pool:
                for _ in tqdm(pool.map(decode_into, range(len(paths))), total=len(paths), desc="decode", unit="img"):
                    pass
            array.flush()
        log.info("decoded %d images in %.1f s into %s", len(paths), time.perf_counter() - started, cache)
    evict(cache_dir)
    return np.load(cache, mmap_mode=mmap_mode)


def reuse(cache: Path, mmap_mode: str | None) -> np.ndarray:
    """The cache file's array, its mtime touched: eviction removes the files used least recently."""
    array = np.load(cache, mmap_mode=mmap_mode)
    log.info("reusing decoded images from %s", cache)
    with contextlib.suppress(OSError):
        os.utime(cache)
    return array
