"""Download stage: put the Cats vs Dogs archive in place, verified, or generate the offline one.

`source: url` fetches `download.url` (HTTP(S) with resume and retries, a file:// URL or a local path) and
checks its size and SHA-256 before the archive appears. `source: synthetic` writes an archive shaped like
the real one from a seed, so the pipeline runs offline. There is never a silent switch from one to the other.
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


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the archive goes")
    parser.add_argument("--partial-dir", type=Path, required=True, help="where an interrupted download waits")
    args = parser.parse_args(argv)
    p = params.load().download

    if p.source == "synthetic":
        s = p.synthetic
        log.info("generating a synthetic archive: %d images per class, sides %d-%d px, seed %d",
                 s.images_per_class, *s.side_range, s.seed)
        odd = synthetic.generate(args.out, **s.model_dump())
        log.info("wrote %s with %d odd files mixed in", args.out, len(odd))
        faulty = synthetic.faults(**s.model_dump())
        if faulty:
            kinds = [kind for kind, _ in faulty.values()]
            log.info("and with faults for a data review: %s",
                     ", ".join(f"{kinds.count(k)} {k}" for k in synthetic.FAULTS if k in kinds))
    else:
        log.info("fetching %s", p.url)
        digest = fetch(p.url, args.out, size=p.size, sha256=p.sha256, timeout=p.timeout, retries=p.retries,
                       partial_dir=args.partial_dir)
        log.info("wrote %s (sha256 %s)", args.out, digest)


if __name__ == "__main__":
    main()
