"""Filter throughput (images/s) of both methods on real photos: python benchmarks/filter_throughput.py [ARCHIVE]

ARCHIVE is a .zip or .tar laid out like the real archive (docs/speed.md: how to make a sample of it). Each method runs the real filter stage in a fresh process, `--repeat` times, in a temporary
folder; the figure is the stage's own count of images over its wall time, median of the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def read_members(source: Path) -> dict[str, bytes]:
    if source.suffix == ".zip":
        with zipfile.ZipFile(source) as zf:
            return {name: zf.read(name) for name in zf.namelist() if not name.endswith("/")}
    with tarfile.open(source) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def as_zip(source: Path, folder: Path, copies: int) -> Path:
    """The archive's members `copies` times over (as N_copy.jpg), so that a small sample runs long enough
    for the pool's start-up not to dominate."""
    target = folder / "archive.zip"
    members = read_members(source)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for copy in range(copies):
            for name, data in members.items():
                stem, dot, ext = name.rpartition(".")
                zf.writestr(f"{stem}_{copy}{dot}{ext}" if copy else name, data)
    return target


def run_filter(archive: Path, method: str, workers: int, folder: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["filter"].update(method=method, workers=workers)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "catsdogs.stages.filter", str(archive), "--out", "clean",
                    "--metrics", "filter.json", "--report", "dropped.csv"], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    return json.loads((folder / "filter.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="a .zip or .tar of photos laid out like the archive")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=10, help="how many times the sample is repeated")
    parser.add_argument("--workers", type=int, default=0, help="0 = one per core")
    args = parser.parse_args()
    if not args.archive.exists():
        raise SystemExit(f"{args.archive}: not found (pass an archive of class folders, e.g. PetImages/<class>/N.jpg)")
    with tempfile.TemporaryDirectory() as tmp:
        archive = as_zip(args.archive, Path(tmp), args.copies)
        print(f"{args.archive.name}: {os.cpu_count()} cores, workers={args.workers or os.cpu_count()}, "
              f"{args.copies} copies of the sample")
        for method in ("decode", "jfif"):
            runs = [run_filter(archive, method, args.workers, Path(tmp)) for _ in range(args.repeat)]
            rates = [r["images_per_second"] for r in runs]
            print(f"  {method:6}: {statistics.median(rates):8.1f} images/s (median of {len(rates)}: "
                  f"{', '.join(f'{x:.0f}' for x in rates)}); kept {runs[0]['kept']} of {runs[0]['images']}")


if __name__ == "__main__":
    main()
