"""The documentation stays true to the repository: README.md and docs/*.md.

- Every params key they name exists in the committed `params.yaml`: dotted names (`train.learning_rate`),
  `-S key=value` overrides, and the keys of YAML code blocks, which are read as `params.yaml` excerpts
  (a block whose first line is a comment naming another file, such as `# dvc.yaml`, is skipped).
- Every relative link points to a file that exists (and, with `#anchor`, to a heading in it).
- No document points into a `shared/` folder: a user's clone has none.
- The README fits on a few screens.
- The figures that come from the code or the config are the code's: the demo's sizes (configs/demo.yaml and
  the synthetic plan), predict's start-up (one figure), the locked packages (pyproject.toml's dev extra).
- Every module, source path and `file.py` they name exists, and tutorial.md's table of the code lists every
  module in its folder.

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
README_MAX_LINES = 200  # the front door: reference material goes into docs/

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


# --- figures that come from the code and the config ---------------------------------------------------

DEMO_TEXT = (ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8")


def merged(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` applied key by key, as `dvc exp run -S` applies the demo's."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def demo_facts() -> dict:
    """The demo's figures that the docs state, each computed from configs/demo.yaml over params.yaml."""
    from catsdogs.data import synthetic

    demo = merged(committed_params(), yaml.safe_load(DEMO_TEXT))
    generated = demo["download"]["synthetic"]
    odd = synthetic.plan(images_per_class=generated["images_per_class"], side_range=generated["side_range"],
                         pathology_rate=generated["pathology_rate"], seed=generated["seed"])
    undecodable = sum(synthetic.PATHOLOGIES[kind]["decode"] is not None for kind in odd.values())
    images = 2 * generated["images_per_class"]
    height, width = demo["data"]["image_size"]
    return {"images": images, "images_per_class": generated["images_per_class"], "undecodable": undecodable,
            "kept": images - undecodable, "pathology_rate": generated["pathology_rate"], "epochs": demo["epochs"],
            "height": height, "width": width, "batch_size": demo["data"]["batch_size"],
            "entry_width": demo["model"]["entry_width"], "exit_width": demo["model"]["exit_width"],
            "bn_momentum": demo["model"]["bn_momentum"],
            # as written in configs/demo.yaml (1.0e-3), which the docs quote
            "learning_rate": re.search(r"^\s+learning_rate:\s*(\S+)", DEMO_TEXT, re.M).group(1)}


DEMO_PHRASES = [
    ("README.md", "generates {images:,} images"),
    ("README.md", "{pathology_rate:.0%} of them odd"),
    ("README.md", "drops the {undecodable} that do not decode"),
    ("README.md", "for {epochs} epochs at {height}×{width}"),
    ("docs/workflows.md", "({kept:,} images, {height}×{width}, widths {entry_width}–{exit_width}, batch {batch_size})"),
    ("docs/workflows.md", "After `catsdogs demo` ({epochs} epochs)"),
    ("docs/workflows.md", "the demo ({images:,} synthetic images of which {kept:,} kept, {epochs} checkpoints)"),
    ("docs/workflows.md", "(the demo has {images_per_class})"),
    ("docs/params.md", "a {height}×{width} `data.image_size` with `data.batch_size: {batch_size}`"),
    ("docs/params.md", "`model.bn_momentum: {bn_momentum}`"),
    ("docs/params.md", "the demo uses {bn_momentum}"),
    ("docs/params.md", "`train.learning_rate: {learning_rate}`"),
    ("docs/review.md", "The demo (`configs/demo.yaml`: {images:,} images, {height}×{width}, {epochs} epochs)"),
]


@pytest.mark.parametrize("doc, phrase", DEMO_PHRASES, ids=[f"{d}: {p}" for d, p in DEMO_PHRASES])
def test_the_docs_state_the_demo_as_configs_demo_yaml_makes_it(doc, phrase):
    text = " ".join((ROOT / doc).read_text(encoding="utf-8").split())  # a phrase may wrap across lines
    expected = phrase.format(**demo_facts())
    assert expected in text, f"{doc} should say {expected!r} (from configs/demo.yaml and the synthetic plan)"


def test_predicts_start_up_is_one_figure_in_the_readme_and_export_md():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    table = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    onnx = re.search(r"^\| ONNX \(onnxruntime\) \| ([\d.]+ s) \|", table, re.M).group(1)
    keras_file = re.search(r"^\| `\.keras` \(TensorFlow\) \| ([\d.]+ s) \|", table, re.M).group(1)
    assert f"on the ONNX file and starts in {onnx};" in readme
    assert f"takes {keras_file} to start on the `.keras` file" in readme


def requirement_names(extra: str, project: dict) -> set[str]:
    """Every requirement of an extra of pyproject.toml, through the extras it includes, and the base's."""
    names = set()
    for requirement in project["optional-dependencies"][extra] + project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        included = re.search(r"\[([\w,]+)\]", requirement)
        if name == project["name"] and included:
            for inner in included.group(1).split(","):
                names |= requirement_names(inner, project)
        else:
            names.add(name)
    return names


def test_environment_md_names_every_package_of_the_dev_extra():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    named = set(re.findall(r"`([A-Za-z0-9_.-]+)`", (ROOT / "docs" / "environment.md").read_text(encoding="utf-8")))
    missing = sorted(requirement_names("dev", project) - named)
    assert not missing, f"docs/environment.md's list of what is locked lacks {missing}"


# --- the code the docs name exists --------------------------------------------------------------------

SOURCE = ROOT / "src"
MODULE_NAME = re.compile(r"(?<![\w./-])catsdogs(?:\.[a-z_]\w*)+")
SOURCE_PATH = re.compile(r"(?<![\w./-])src/catsdogs/[\w/]*\.py\b")
BARE_FILE = re.compile(r"`([\w-]+\.py)`")
PYTHON_FILES = {path.name for folder in ("src", "tests", "benchmarks", "tools") for path in (ROOT / folder).rglob("*.py")}


def unknown_code(text: str) -> list[str]:
    """Dotted module names (catsdogs.training.model.build), source paths and `file.py` names in a text that
    name nothing in the repository (an old module, a function gone)."""
    unknown = [path for path in SOURCE_PATH.findall(text) if not (ROOT / path).is_file()]
    unknown += [name for name in BARE_FILE.findall(text) if name not in PYTHON_FILES]
    for name in MODULE_NAME.findall(text):
        parts = name.split(".")
        for n in range(len(parts), 0, -1):  # the longest prefix that is a module or a package
            base = SOURCE.joinpath(*parts[:n])
            file = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
            if file.is_file():
                break
        rest = parts[n:]
        if rest and not re.search(rf"^(?:def |class )?{rest[0]}\b", file.read_text(encoding="utf-8"), re.M):
            unknown.append(name)
    return sorted(set(unknown))


@pytest.mark.parametrize("doc", DOCS + [ROOT / "metrics" / "README.md"], ids=relative)
def test_every_module_and_source_file_the_docs_name_exists(doc):
    unknown = unknown_code(doc.read_text(encoding="utf-8"))
    assert not unknown, f"{relative(doc)} names code that does not exist (moved or renamed?): {unknown}"


def test_the_code_check_catches_an_old_module_path():
    assert unknown_code("`catsdogs.livelog`, `catsdogs.training.model.no_such`, `src/catsdogs/model.py`, "
                        "`monitor.py`") == ["catsdogs.livelog", "catsdogs.training.model.no_such", "monitor.py",
                                            "src/catsdogs/model.py"]
    assert unknown_code("`catsdogs.training.model.inference_model`, `src/catsdogs/stages/train.py`, "
                        "`catsdogs.serving`, `figures.py`") == []


def tutorial_modules() -> set[str]:
    """The modules of tutorial.md's table of the code, as paths under src/catsdogs/."""
    text = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    section = text[text.index("## The code"):]
    listed, folder = set(), ""
    for row in re.findall(r"^\| (.+?) \|", section, re.M):
        heading = re.fullmatch(r"\*\*(?:`(\w+)/`|base)\*\*.*", row)
        if heading:
            folder = f"{heading.group(1)}/" if heading.group(1) else ""
        listed |= {folder + name for name in re.findall(r"`(\w+\.py)`", row)}
    return listed


def test_the_tutorials_table_of_the_code_lists_every_module_in_its_folder():
    modules = {path.relative_to(SOURCE / "catsdogs").as_posix() for path in (SOURCE / "catsdogs").rglob("*.py")
               if path.name != "__init__.py"}
    listed = tutorial_modules()
    assert listed == modules, f"docs/tutorial.md: add {sorted(modules - listed)}, remove {sorted(listed - modules)}"
