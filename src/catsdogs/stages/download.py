"""Download stage: put the Cats vs Dogs archive in place, verified, or generate the offline one.

`source: url` fetches `download.url` (HTTP(S) with resume and retries, a file:// URL or a local path) and
checks its size and SHA-256 before the archive appears. `source: synthetic` writes an archive shaped like
the real one, or in the layout download.synthetic asks for, from a seed, so the pipeline runs offline. There
is never a silent switch from one to the other.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from catsdogs import params
from catsdogs.data import synthetic
from catsdogs.entry import run_main
from catsdogs.data.fetch import fetch

log = logging.getLogger("download")

PARAMS = ("download",)  # dvc.yaml's download params equal these


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the archive goes")
    parser.add_argument("--partial-dir", type=Path, required=True, help="where an interrupted download waits")
    args = parser.parse_args(argv)
    p = params.for_stage("download", PARAMS)

    if p.download.source == "synthetic":
        spec = p.download.synthetic
        log.info("generating a synthetic %s archive: %d classes (%s) of %d images, sides %d-%d px, seed %d",
                 spec.format, len(spec.classes), ", ".join(spec.classes), spec.images_per_class, *spec.side_range,
                 spec.seed)
        odd = synthetic.generate(args.out, **spec.model_dump())
        log.info("wrote %s with %d odd files mixed in", args.out, len(odd))
        faulty = synthetic.faults(**spec.model_dump())
        if faulty:
            kinds = [kind for kind, _ in faulty.values()]
            log.info("and with faults for a data review: %s",
                     ", ".join(f"{kinds.count(k)} {k}" for k in synthetic.FAULTS if k in kinds))
    else:
        source = p.download
        log.info("fetching %s", source.url)
        digest = fetch(source.url, args.out, size=source.size, sha256=source.sha256, timeout=source.timeout,
                       retries=source.retries, partial_dir=args.partial_dir)
        log.info("wrote %s (sha256 %s)", args.out, digest)


if __name__ == "__main__":
    main()
