"""The documentation stays true to the repository: README.md and docs/*.md.

- Every params key they name exists in the committed `params.yaml`: dotted names (`train.learning_rate`),
  `-S key=value` overrides, and the keys of YAML code blocks, which are read as `params.yaml` excerpts
  (a block whose first line is a comment naming another file, such as `# dvc.yaml`, is skipped).
- Every relative link points to a file that exists (and, with `#anchor`, to a heading in it).
- No document points into a `shared/` folder: a user's clone has none.
- The README fits on a few screens.

The committed params come from conftest (not the workspace's params.yaml, which `catsdogs demo` rewrites).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, committed_params

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^(```+|~~~+)[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
# a dotted name starting with a top-level params key, not inside a longer name or path
# (`models/model.keras`, `catsdogs.training.model.build` and `tf.distribute` are not params)
DOTTED = re.compile(r"(?<![\w./$-])({tops})((?:\.[A-Za-z_]\w*)+)(?![\w/(-])")
# the last part of a file name, not a key: `model.keras`, `train.json`, `filter.py`
FILE_SUFFIXES = {"keras", "json", "csv", "py", "yaml", "yml", "png", "md", "lock", "zip", "tar", "txt", "npy", "toml"}
# a YAML block that starts by naming a file other than params.yaml or a configs/ override file
OTHER_FILE = re.compile(r"#\s*(?!params\.yaml\b|configs/)\S+\.(?:ya?ml|lock)\b")
SET_PARAM = re.compile(r"(?:^|\s)(?:-S|--set-param)(?:\s+|=)['\"]?([A-Za-z_][\w.]*)=")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# `shared/` as a folder of this repository or next to it; not a deeper path such as /mnt/shared/
SHARED = re.compile(r"(?:(?<![\w/.-])|(?<=\.\./))shared/")


def key_paths(tree: dict, prefix: str = "") -> set[str]:
    """Every key of a nested mapping as a dotted path, sections included: {"train", "train.augment", ...}."""
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict):
            paths |= key_paths(value, path + ".")
    return paths


def named_keys(text: str, tops) -> set[str]:
    """The params keys a Markdown text names, as dotted paths."""
    names = set()
    dotted = re.compile(DOTTED.pattern.format(tops="|".join(map(re.escape, sorted(tops)))))
    for match in dotted.finditer(text):
        name = match.group(1) + match.group(2)
        if name.rsplit(".", 1)[-1].lower() not in FILE_SUFFIXES:
            names.add(name)
    names |= set(SET_PARAM.findall(text))
    for fence in FENCE.finditer(text):
        language, body = fence.group(2).lower(), fence.group(3)
        if language not in ("yaml", "yml") or OTHER_FILE.match(body.lstrip()):
            continue
        tree = yaml.safe_load(body)
        if isinstance(tree, dict):
            names |= key_paths(tree)
    return names


def without_code(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    text = FENCE.sub("", text)
    return re.sub(r"(`+).*?\1", "", text, flags=re.S)


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", text), re.M):
        slug = "".join(c for c in heading.lower().replace("`", "")
                       if c in " -_" or unicodedata.category(c)[0] in "LN").replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(text: str, folder: Path) -> list[str]:
    """The relative links of a Markdown text in `folder` whose file, or heading, does not exist."""
    broken = []
    for target in LINK.findall(without_code(text)):
        if re.match(r"[a-zA-Z][\w+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (folder / path).resolve() if path else None
        if file is not None and not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (file is None or file.suffix == ".md"):
            linked = file.read_text(encoding="utf-8") if file else text
            if anchor not in anchors(linked):
                broken.append(f"{target}: no such heading")
    return list(dict.fromkeys(broken))


def relative(doc: Path) -> str:
    return doc.relative_to(ROOT).as_posix()


PARAMS = committed_params()
KEYS = key_paths(PARAMS)


def test_there_is_a_readme_and_reference_docs():
    assert DOCS[0].is_file() and len(DOCS) > 1, "README.md and docs/*.md"


@pytest.mark.parametrize("doc", DOCS, ids=relative)
def test_every_params_key_the_docs_name_exists(doc):
    unknown = sorted(named_keys(doc.read_text(encoding="utf-8"), PARAMS) - KEYS)
    assert not unknown, f"{relative(doc)} names params that the committed params.yaml lacks: {unknown}"


@pytest.mark.parametrize("doc", DOCS, ids=relative)
def test_every_relative_link_points_to_an_existing_file(doc):
    broken = broken_links(doc.read_text(encoding="utf-8"), doc.parent)
    assert not broken, f"{relative(doc)}: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=relative)
def test_no_doc_points_into_a_shared_folder(doc):
    lines = [f"line {n}: {line.strip()}" for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
             if SHARED.search(line)]
    assert not lines, f"{relative(doc)} mentions a shared/ folder, which a user's clone does not have: {lines}"


def test_the_readme_fits_on_a_few_screens():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move reference material into docs/"


# --- the checks themselves catch what they are for ----------------------------------------------------

SAMPLE_PARAMS = {"epochs": 25, "data": {"batch_size": 128},
                 "train": {"learning_rate": 3.0e-4, "augment": {"flip": True}}}


@pytest.mark.parametrize("text, expected", [
    ("Set `train.learnin_rate` to 1e-3.", {"train.learnin_rate"}),
    ("dvc exp run -S train.learnin_rate=1.0e-3", {"train.learnin_rate"}),
    ("dvc exp run -S epoch=50", {"epoch"}),
    ("| `data.batchsize` | 128 |", {"data.batchsize"}),
    ("```yaml\ntrain:\n  learnin_rate: 3.0e-4\n```\n", {"train", "train.learnin_rate"}),
])
def test_a_made_up_key_is_caught(text, expected):
    names = named_keys(text, SAMPLE_PARAMS)
    assert expected <= names and names - key_paths(SAMPLE_PARAMS)


@pytest.mark.parametrize("text", [
    "`models/model.keras`, `metrics/train.json`, `src/catsdogs/stages/train.py`, `catsdogs.training.model.build`",
    "`tf.distribute.MirroredStrategy`, `python -m catsdogs.stages.train`, see model.keras.",
    "```yaml\n# dvc.yaml\nstages:\n  train:\n    cmd: python\n```\n",
])
def test_files_and_modules_are_not_taken_for_keys(text):
    assert named_keys(text, SAMPLE_PARAMS) == set()


def test_real_keys_pass():
    text = ("`train.learning_rate`, train.augment.flip, `dvc exp run -S epochs=50 -S data.batch_size=64`\n"
            "```yaml\ntrain:\n  augment:\n    flip: false\n```\n")
    assert named_keys(text, SAMPLE_PARAMS) == {"train", "train.augment", "train.augment.flip",
                                               "train.learning_rate", "epochs", "data.batch_size"}


def test_broken_links_and_shared_folders_are_caught(tmp_path):
    (tmp_path / "there.md").write_text("# A heading: `with` code\n")
    text = ("[ok](there.md) [ok](there.md#a-heading-with-code) [web](https://example.com) [here](#top)\n"
            "# Top\n[gone](missing.md) [bad anchor](there.md#nowhere) `[not a link](in-code.md)`\n")
    assert broken_links(text, tmp_path) == ["missing.md: no such file", "there.md#nowhere: no such heading"]
    assert SHARED.search("python benchmarks/benchmark.py --photos ../shared/data/sample.tar")
    assert SHARED.search("see `shared/docs/measuring.md`")
    assert not SHARED.search("dvc remote modify --local local url /mnt/shared/catsdogs-dvc")
