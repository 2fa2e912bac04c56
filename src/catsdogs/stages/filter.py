"""Filter stage: keep the images that training can load, drop the rest, and say why.

Reads members straight from the archive, zip or tar (no extraction first; catsdogs.data.sources), checks them
in parallel, writes the kept ones to the cleaned folder as `<class>/<file>` and counts what was dropped per
reason. Images are the archive's `<root>/<class>/<file>`: `filter.root`, or the root found. `method: decode` keeps
exactly what decodes to an RGB image with the decoder training uses; `method: jfif` reproduces the
tutorial's header check.
Members listed in the exclusion list (`--exclude`, catsdogs.data.exclusions) are dropped unread, with reason
`excluded` and the list's reason as the detail.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path


from catsdogs import atomic, params, tables
from catsdogs.data import archive as zipped
from catsdogs.data import exclusions, images, sources
from catsdogs.entry import run_main
from catsdogs.errors import UserError

log = logging.getLogger("filter")

PARAMS = ("filter",)  # dvc.yaml's filter params equal these


def summarize(results, ignored, method: str, seconds: float, root: str = "") -> dict:
    classes = sorted({cls for _, cls, _ in results})
    reasons = [r for r in images.REASONS if r == "excluded" or (r == "no_jfif") == (method == "jfif")]
    kept = [cls for _, cls, reason in results if reason is None]
    return {
        "method": method,
        "root": root,  # the archive's folder holding the class folders ("" for its top level): member names
        "images": len(results),
        "kept": len(kept),
        "dropped": len(results) - len(kept),
        "kept_per_class": {cls: kept.count(cls) for cls in classes},
        "dropped_per_reason": {r: sum(1 for *_, reason in results if reason == r) for r in reasons},
        "ignored_members": len(ignored),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(results) / seconds, 1) if seconds > 0 else None,
    }


def write_report(path: Path, results, ignored, excluded_why: dict[str, str] | None = None) -> None:
    """Every dropped or ignored member; an excluded one's detail is the reason its list gives."""
    excluded_why = excluded_why or {}
    dropped = [[name, reason, excluded_why.get(name, images.REASONS[reason]) if reason == "excluded"
                else images.REASONS[reason]] for name, _, reason in sorted(results) if reason is not None]
    ignored = [[name, "ignored", why] for name, why in sorted(ignored)]
    atomic.write_csv(path, tables.FILTER_REPORT, dropped + ignored)


@run_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="cleaned image folder")
    parser.add_argument("--metrics", type=Path, required=True, help="counts per class and reason (JSON)")
    parser.add_argument("--report", type=Path, required=True, help="every dropped or ignored member (CSV)")
    parser.add_argument("--exclude", type=Path, help="the exclusion list (CSV): members to drop, and why")
    args = parser.parse_args(argv)
    p = params.for_stage("filter", PARAMS)

    start = time.perf_counter()
    listed = exclusions.read(args.exclude) if args.exclude else []
    max_pixels = p.filter.max_pixels or images.MAX_PIXELS
    source = sources.open_source(args.archive, max_pixels)
    members = sources.list_members(source, p.filter.root)
    exclusions.check_listed(listed, {name for name, _ in members.images}, args.exclude, args.archive)
    excluded_why = {e.member: e.reason for e in listed}
    excluded = [(name, cls, "excluded") for name, cls in members.images if name in excluded_why]
    members.images = [(name, cls) for name, cls in members.images if name not in excluded_why]
    atomic.remove_leftovers(args.out, args.metrics, args.report)
    with atomic.atomic_dir(args.out) as tmp_out:
        members = zipped.separate_clashes(members, zipped.name_key(tmp_out))
        ignored = members.ignored
        results = sources.check_source(source, members, tmp_out, p.filter.method, max_pixels, p.filter.workers)
        source.close()
        results += excluded
        summary = summarize(results, ignored, p.filter.method, time.perf_counter() - start, members.root)
        empty = [cls for cls, n in summary["kept_per_class"].items() if n == 0]
        if empty:
            raise UserError(f"{args.archive}: no usable image left in class folder(s) {', '.join(empty)}")
    atomic.write_json(args.metrics, summary)
    write_report(args.report, results, ignored, excluded_why)

    log.info(
        "kept %d of %d images (%s), dropped %d: %s; ignored %d other members; %.0f images/s",
        summary["kept"], summary["images"], ", ".join(f"{c} {n}" for c, n in summary["kept_per_class"].items()),
        summary["dropped"], ", ".join(f"{r} {n}" for r, n in summary["dropped_per_reason"].items() if n) or "none",
        summary["ignored_members"], summary["images_per_second"] or 0,
    )


if __name__ == "__main__":
    main()
