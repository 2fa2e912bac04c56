"""Every image decoded once into a uint8 array on disk, reused by later runs, stages and experiments.

The tutorial decodes and resizes every JPEG again in every epoch. Here each image is decoded once per
(files, image size, decoder), in parallel, into a .npy file; stages read it memory-mapped, so the OS keeps it
in RAM when it fits and pages it when it does not. The cache heals itself: a file that is damaged (cut
short by a full disk or an interrupted copy) or foreign (another shape) is logged and decoded again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from catsdogs import atomic
from catsdogs.data import images

log = logging.getLogger(__name__)


def files_key(directory: str | os.PathLike, paths: list[str], extra: str = "") -> str:
    """A short key for these files as they are now (names, sizes, modification times) plus `extra`."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        st = (Path(directory) / path).stat()
        digest.update(f"\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: str | os.PathLike, directory, paths: list[str], size) -> Path:
    """Named after the image size, every file's name, size and mtime, and the decoder's version: a changed
    folder, size or decoder gets a new file, in the workspace and in every fresh copy alike."""
    height, width = size
    key = files_key(directory, paths, f"{height}x{width}\0{images.DECODER}")
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


def load(directory: str | os.PathLike, paths: list[str], size, cache_dir: str | os.PathLike,
         mode: str = "mmap") -> np.ndarray:
    """All `paths` decoded to uint8 (N, height, width, 3), from the cache, decoding what is missing.

    `mode`: "mmap" maps the cache file: the OS keeps the pages it can in RAM, so data larger than memory
    still trains (slower once it no longer fits, as random batches then read from disk). "memory" reads it
    all into RAM first: the fastest batches, but the whole array must fit.
    """
    directory, cache_dir, size = Path(directory), Path(cache_dir), tuple(size)
    cache = cache_path(cache_dir, directory, paths, size)
    mmap_mode = "r" if mode == "mmap" else None
    if cache.exists():
        why = problem(cache, (len(paths), *size, 3))
        if why is None:
            log.info("reusing decoded images from %s", cache)
            return np.load(cache, mmap_mode=mmap_mode)
        log.info("decoding the images again: the cache %s is damaged (%s)", cache, why)

    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob("images-*.npy"):
        stale.unlink()
    with atomic.atomic_path(cache, suffix=".npy") as tmp:  # an interrupted decode is never taken for a cache
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *size, 3))

        def decode_into(i: int) -> None:
            array[i] = images.decode_file(directory / paths[i], size)

        # Pillow releases the GIL while decoding and resizing, so threads use every core.
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            for _ in tqdm(pool.map(decode_into, range(len(paths))), total=len(paths), desc="decode", unit="img"):
                pass
        array.flush()
    log.info("decoded %d images once into %s", len(paths), cache)
    return np.load(cache, mmap_mode=mmap_mode)
