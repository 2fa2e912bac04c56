"""Filter-style checking throughput (images/s) of a .tar.gz against a zip of the same photos:
python benchmarks/filter_sources.py ARCHIVE [--copies N] [--workers W] [--repeat R]

ARCHIVE is a .zip or tar of photos in class folders (docs/speed.md: how to make a sample of the real archive).
Its photos, `--copies` times over, are written as a deflated zip (as Kaggle's is), a .tar.gz and a plain tar;
each is listed and checked (method decode) with catsdogs.data.sources, as the filter does, into a fresh
folder, `--repeat` times, the kinds taking turns; the figure is images over wall time, median of the runs.
Also measured: how fast one process can only read the .tar.gz's members front to back (the ceiling of the
sequential hand-off to the pool), and how long decompressing it to a temporary plain tar first would take
(the alternative design).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import statistics
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # read by tqdm as it loads
from catsdogs.data import images, sources  # noqa: E402


def read_photos(path: Path) -> dict[str, bytes]:
    source = sources.open_source(path)
    members = sources.list_members(source)
    if source.random_access:
        with zipfile.ZipFile(path) as zf:
            return {name: zf.read(name) for name, _ in members.images}
    return {name: data for name, _, _, data in source.stream(dict(members.images))}


def write_all(photos: dict[str, bytes], folder: Path, copies: int) -> dict[str, Path]:
    names = [(f"{stem}_{copy}{dot}{ext}" if copy else name, data) for copy in range(copies)
             for name, data in photos.items() for stem, dot, ext in [name.rpartition(".")]]
    paths = {"zip": folder / "photos.zip", "tar.gz": folder / "photos.tar.gz", "tar": folder / "photos.tar"}
    with zipfile.ZipFile(paths["zip"], "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in names:
            zf.writestr(name, data)
    for kind, mode in (("tar", "w"), ("tar.gz", "w:gz")):
        with tarfile.open(paths[kind], mode) as tar:
            for name, data in names:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return paths


def check(path: Path, workers: int, folder: Path) -> tuple[int, float]:
    out = folder / "clean"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    start = time.perf_counter()
    source = sources.open_source(path)
    members = sources.list_members(source)
    results = sources.check_source(source, members, out, "decode", images.MAX_PIXELS, workers)
    seconds = time.perf_counter() - start
    assert all(reason is None for *_, reason in results), "the sample should be clean"
    return len(results), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="a .zip or tar of photos in class folders")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=4, help="how many times the sample is repeated")
    parser.add_argument("--workers", type=int, default=0, help="0 = one per core")
    args = parser.parse_args()
    if not args.archive.exists():
        raise SystemExit(f"{args.archive}: not found")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_all(read_photos(args.archive), folder, args.copies)
        workers = args.workers or os.cpu_count()
        print(f"{args.archive.name} x {args.copies}: {os.cpu_count()} cores, {workers} workers; "
              + ", ".join(f"{k} {p.stat().st_size / 2**20:.0f} MiB" for k, p in paths.items()))
        runs = {kind: [] for kind in paths}
        for _ in range(args.repeat):  # interleaved, so that a busy moment of the machine hits all kinds
            for kind, path in paths.items():
                runs[kind].append(check(path, args.workers, folder))
        for kind, done in runs.items():
            rates = [n / s for n, s in done]
            print(f"  {kind:7}: {statistics.median(rates):7.0f} images/s (median of {len(rates)}: "
                  f"{', '.join(f'{r:.0f}' for r in rates)}; {done[0][0]} images)")

        start = time.perf_counter()
        source = sources.open_source(paths["tar.gz"])
        members = sources.list_members(source)
        listing = time.perf_counter() - start
        start = time.perf_counter()
        count = sum(1 for _ in source.stream(dict(members.images)))
        read_only = time.perf_counter() - start
        start = time.perf_counter()
        with gzip.open(paths["tar.gz"]) as src, open(folder / "plain.tar", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        unpack = time.perf_counter() - start
        print(f"  of which listing the .tar.gz (its first pass, headers only): {listing:.2f} s")
        print(f"  reading the .tar.gz's members in one process, no checking: {count / read_only:7.0f} images/s")
        print(f"  decompressing it to a temporary tar first would add {unpack:.2f} s "
              f"({(folder / 'plain.tar').stat().st_size / 2**20:.0f} MiB on disk) before any check")


if __name__ == "__main__":
    main()
