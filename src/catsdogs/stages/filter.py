"""Filter stage: keep the images that training can load, drop the rest, and say why.

Reads members straight from the zip (no extraction first), checks them in parallel, writes the kept ones
to the cleaned folder and counts what was dropped per reason. `method: decode` keeps exactly what decodes
to an RGB image with the decoder training uses; `method: jfif` reproduces the tutorial's header check.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from catsdogs import archive as zipped
from catsdogs import atomic, images, params
from catsdogs.errors import UserError, run_main

log = logging.getLogger("filter")

_zip = None  # each worker process opens the archive once


def _open_in_worker(path: str) -> None:
    global _zip
    _zip = zipped.open_zip(path)


def _check_chunk(chunk, out_dir: str, method: str, max_pixels: int):
    """Check members and write the kept ones; returns (member, class, reason or None) per member."""
    results = []
    for name, cls in chunk:
        if _zip.getinfo(name).file_size > max_pixels * 4 + 2**20:
            results.append((name, cls, "too_large"))  # never inflate a zip bomb into memory
            continue
        data = _zip.read(name)
        reason = images.check(data, method, max_pixels)
        if reason is None:
            target = Path(out_dir, zipped.IMAGES_ROOT, cls, Path(name).name)
            target.write_bytes(data)
        results.append((name, cls, reason))
    return results


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def filter_archive(zip_path: Path, members: zipped.Members, out_dir: Path, method: str, max_pixels: int,
                   workers: int):
    """Check every class image of the archive, writing the kept ones into `out_dir`."""
    for cls in members.classes:
        (out_dir / zipped.IMAGES_ROOT / cls).mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    chunks = list(_chunks(members.images, 64))
    results = []
    with ProcessPoolExecutor(workers, initializer=_open_in_worker, initargs=(str(zip_path),)) as pool:
        check = functools.partial(_check_chunk, out_dir=str(out_dir), method=method, max_pixels=max_pixels)
        futures = pool.map(check, chunks)
        with tqdm(total=len(members.images), desc=f"filter ({method})", unit="img") as bar:
            for chunk_results in futures:
                results.extend(chunk_results)
                bar.update(len(chunk_results))
    return results


def summarize(results, ignored, method: str, seconds: float) -> dict:
    classes = sorted({cls for _, cls, _ in results})
    reasons = [r for r in images.REASONS if (r == "no_jfif") == (method == "jfif")]
    kept = [cls for _, cls, reason in results if reason is None]
    return {
        "method": method,
        "images": len(results),
        "kept": len(kept),
        "dropped": len(results) - len(kept),
        "kept_per_class": {cls: kept.count(cls) for cls in classes},
        "dropped_per_reason": {r: sum(1 for *_, reason in results if reason == r) for r in reasons},
        "ignored_members": len(ignored),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(results) / seconds, 1) if seconds > 0 else None,
    }


def write_report(path: Path, results, ignored) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["member", "reason", "detail"])
    for name, _, reason in sorted(results):
        if reason is not None:
            writer.writerow([name, reason, images.REASONS[reason]])
    for name, why in sorted(ignored):
        writer.writerow([name, "ignored", why])
    atomic.write_text(path, buffer.getvalue())


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="cleaned image folder")
    parser.add_argument("--metrics", type=Path, required=True, help="counts per class and reason (JSON)")
    parser.add_argument("--report", type=Path, required=True, help="every dropped or ignored member (CSV)")
    args = parser.parse_args(argv)
    p = params.load().filter

    start = time.perf_counter()
    with zipped.open_zip(args.archive) as archive:
        members = zipped.list_members(archive)
    ignored = members.ignored
    with atomic.atomic_dir(args.out) as tmp_out:
        results = filter_archive(args.archive, members, tmp_out, p.method, p.max_pixels, p.workers)
        summary = summarize(results, ignored, p.method, time.perf_counter() - start)
        empty = [cls for cls, n in summary["kept_per_class"].items() if n == 0]
        if empty:
            raise UserError(f"{args.archive}: no usable image left in class folder(s) {', '.join(empty)}")
    atomic.write_json(args.metrics, summary)
    write_report(args.report, results, ignored)

    log.info(
        "kept %d of %d images (%s), dropped %d: %s; ignored %d other members; %.0f images/s",
        summary["kept"], summary["images"], ", ".join(f"{c} {n}" for c, n in summary["kept_per_class"].items()),
        summary["dropped"], ", ".join(f"{r} {n}" for r, n in summary["dropped_per_reason"].items() if n) or "none",
        summary["ignored_members"], summary["images_per_second"] or 0,
    )


if __name__ == "__main__":
    main()
