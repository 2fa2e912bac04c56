"""Recall and precision of `catsdogs review` against the faults the synthetic archive injected.

    python benchmarks/review_recall.py [REPO]     # after `dvc repro` and `catsdogs review` in REPO (default .)

The truth is `catsdogs.data.synthetic.faults()` of REPO's params.yaml (download.synthetic); the duplicates that
count are those whose copy and original landed in different subsets (models/split.csv). For each fault,
among the candidates of its kind ranked by the review: recall and precision at k for k = the number
injected, and over the whole list (k = every candidate of that kind).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml

from catsdogs.commands import review
from catsdogs.data import synthetic


def truth(repo: Path) -> dict[str, set]:
    s = yaml.safe_load((repo / "params.yaml").read_text())["download"]["synthetic"]
    faults = synthetic.faults(**s)
    with (repo / "models/split.csv").open() as f:
        subset = {review.member(r["path"]): r["subset"] for r in csv.DictReader(f)}
    found = {kind: set() for kind in synthetic.FAULTS}
    for member, (kind, original) in faults.items():
        if member not in subset:
            continue  # excluded already
        if kind == "duplicate":
            if original in subset and subset[original] != subset[member]:
                found[kind].add(frozenset((member, original)))
        else:
            found[kind].add(member)
    return found


def scores(repo: Path, report: Path) -> dict:
    true = truth(repo)
    rows = review.read_candidates(report / review.CANDIDATES_FILE)
    kinds = {"flipped": "label", "non_pet": "non_pet", "duplicate": "duplicate"}
    result = {}
    for fault, kind in kinds.items():
        ranked = [r for r in rows if r["kind"] == kind]
        keys = [frozenset((r["member"], r["partner"])) if kind == "duplicate" else r["member"] for r in ranked]
        injected = len(true[fault])
        entry = {"kind": kind, "injected": injected, "candidates": len(ranked)}
        for name, k in (("at_injected", injected), ("all", len(ranked))):
            hits = sum(1 for key in keys[:k] if key in true[fault])
            entry[name] = {"k": k, "found": hits, "recall": round(hits / injected, 3) if injected else None,
                           "precision": round(hits / k, 3) if k else None}
        # any kind: an image the review lists at all, whatever it calls it
        anywhere = {r["member"] for r in rows} | {r["partner"] for r in rows if r["partner"]}
        if fault != "duplicate":
            entry["listed_as_any_kind"] = sum(1 for m in true[fault] if m in anywhere)
        result[fault] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, nargs="?", default=Path("."))
    parser.add_argument("--report", type=Path, help="the review's folder (default: REPO/review)")
    args = parser.parse_args()
    print(json.dumps(scores(args.repo, args.report or args.repo / "review"), indent=2))


if __name__ == "__main__":
    main()
