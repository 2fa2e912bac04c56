"""The filter stage on small hand-made archives: hostile names, reasons, counts, atomic outputs."""

import csv
import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.data import sources
from catsdogs.stages import filter as filter_stage
from conftest import COMMITTED_PARAMS_TEXT


def jpeg(seed: int, **kwargs) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def make_zip(path: Path, members: dict[str, bytes], symlinks=()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(COMMITTED_PARAMS_TEXT)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_filter(workdir: Path, zip_path: Path, method="decode", exclude: Path | None = None):
    text = (workdir / "params.yaml").read_text().replace("method: decode", f"method: {method}")
    (workdir / "params.yaml").write_text(text)
    filter_stage.main([str(zip_path), "--out", "data/clean", "--metrics", "metrics/filter.json",
                       "--report", "metrics/filter_dropped.csv", *(["--exclude", str(exclude)] if exclude else [])])
    report = list(csv.DictReader(open(workdir / "metrics/filter_dropped.csv")))
    return json.loads((workdir / "metrics/filter.json").read_text()), report


def test_hostile_names_never_leave_the_output_folder(workdir: Path):
    good = jpeg(1)
    zip_path = make_zip(workdir / "a.zip", {
        "PetImages/Cat/1.jpg": good, "PetImages/Dog/1.jpg": good,
        "../evil.jpg": good, "/abs/evil.jpg": good, "PetImages/Cat/../../evil2.jpg": good,
        "PetImages/Cat/deeper/x.jpg": good, "PetImages/Cat/Thumbs.db": b"\xd0\xcf\x11\xe0",
        "readme[1].txt": b"hello",
    }, symlinks=["PetImages/Cat/link.jpg"])
    summary, report = run_filter(workdir, zip_path)
    assert sorted(p.relative_to(workdir).as_posix() for p in (workdir / "data").rglob("*") if p.is_file()) == [
        "data/clean/Cat/1.jpg", "data/clean/Dog/1.jpg"]
    assert not list(workdir.parent.glob("evil*")) and not Path("/abs/evil.jpg").exists()
    reasons = {row["member"]: row["detail"] for row in report if row["reason"] == "ignored"}
    assert reasons["../evil.jpg"] == "path escapes the archive ('..')"
    assert reasons["/abs/evil.jpg"] == "absolute path"
    assert reasons["PetImages/Cat/../../evil2.jpg"] == "path escapes the archive ('..')"
    assert reasons["PetImages/Cat/link.jpg"] == "symlink entry"
    assert reasons["PetImages/Cat/Thumbs.db"] == "not an image file name"
    assert summary["kept"] == 2 and summary["ignored_members"] == 7


def test_counts_per_reason_and_class(workdir: Path):
    members = {f"PetImages/Cat/{i}.jpg": jpeg(i) for i in range(5)}
    members |= {f"PetImages/Dog/{i}.jpg": jpeg(10 + i) for i in range(4)}
    members["PetImages/Cat/5.jpg"] = b""
    members["PetImages/Dog/4.jpg"] = jpeg(3)[:-300]
    members["PetImages/Dog/5.jpg"] = b"plain text"
    summary, report = run_filter(workdir, make_zip(workdir / "a.zip", members))
    assert summary["kept_per_class"] == {"Cat": 5, "Dog": 4}
    assert summary["dropped_per_reason"] == {"empty": 1, "not_an_image": 1, "corrupt": 0, "truncated": 1,
                                             "too_large": 0, "excluded": 0}
    assert {row["member"]: row["reason"] for row in report} == {
        "PetImages/Cat/5.jpg": "empty", "PetImages/Dog/4.jpg": "truncated", "PetImages/Dog/5.jpg": "not_an_image"}
    kept = workdir / "data/clean/Cat/0.jpg"
    assert kept.read_bytes() == members["PetImages/Cat/0.jpg"]  # original bytes, not re-encoded


def test_jfif_method_counts_only_its_own_reason(workdir: Path):
    members = {"PetImages/Cat/0.jpg": jpeg(0), "PetImages/Cat/1.jpg": b"", "PetImages/Dog/0.jpg": jpeg(1),
               "PetImages/Dog/1.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100)}
    summary, _ = run_filter(workdir, make_zip(workdir / "a.zip", members), method="jfif")
    assert summary["dropped_per_reason"] == {"no_jfif": 1, "excluded": 0}
    assert summary["kept_per_class"] == {"Cat": 1, "Dog": 2}  # keeps the corrupt JFIF file, as the tutorial does


@pytest.mark.parametrize("members, message", [
    ({"PetImages/Cat/0.jpg": jpeg(0)},
     "a.zip: only one class folder, Cat, under PetImages/<class>/: at least two classes are needed\n"),
    ({"roses/1.jpg": jpeg(0), "roses/2.jpg": jpeg(1)},  # a packed folder of one class
     "a.zip: only one class folder, roses, under <class>/ at the top level: at least two classes are needed\n"),
    ({"PetImages/Cat/notes.txt": b"x", "readme.txt": b"y"},
     "a.zip: no images in class folders PetImages/<class>/ (image files end in "),
])
def test_archive_without_the_class_folders_is_an_error(workdir: Path, members, message, capsys):
    with pytest.raises(SystemExit) as info:
        run_filter(workdir, make_zip(workdir / "a.zip", members))
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "data").exists() and not (workdir / "metrics").exists()


def test_class_left_empty_is_an_error_and_writes_nothing(workdir: Path, capsys):
    members = {"PetImages/Cat/0.jpg": jpeg(0), "PetImages/Dog/0.jpg": b""}
    with pytest.raises(SystemExit):
        run_filter(workdir, make_zip(workdir / "a.zip", members))
    assert "no usable image left in class folder(s) Dog" in capsys.readouterr().err
    assert not (workdir / "data").exists() or not any((workdir / "data").iterdir())
    assert not (workdir / "metrics").exists()


@pytest.mark.parametrize("content", [b"", b"this is not a zip", None])
def test_missing_truncated_or_corrupt_zip_is_a_clear_error(workdir: Path, content, capsys):
    path = workdir / "a.zip"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit):
        run_filter(workdir, path)
    err = capsys.readouterr().err
    assert ("archive not found" if content is None else "not a readable zip archive") in err


def test_truncated_zip_is_a_clear_error(workdir: Path, capsys):
    path = make_zip(workdir / "a.zip", {f"PetImages/{c}/{i}.jpg": jpeg(i) for c in ("Cat", "Dog") for i in range(5)})
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(SystemExit):
        run_filter(workdir, path)
    assert "not a readable zip archive" in capsys.readouterr().err


def test_list_members_sorts_images_from_the_rest(tmp_path: Path):
    path = make_zip(tmp_path / "a.zip", {"PetImages/Cat/1.jpg": b"x", "PetImages/Dog/2.JPG": b"y",
                                         "PetImages/.git/3.jpg": b"z", "CDLA-Permissive-2.0.pdf": b"%PDF"})
    members = sources.list_members(sources.open_source(path))
    assert members.images == [("PetImages/Cat/1.jpg", "Cat"), ("PetImages/Dog/2.JPG", "Dog")]
    assert dict(members.ignored) == {"PetImages/.git/3.jpg": "hidden folder",
                                     "CDLA-Permissive-2.0.pdf": "outside PetImages/<class>/"}


def test_list_members_says_why_each_other_member_is_ignored(tmp_path: Path):
    path = make_zip(tmp_path / "a.zip", {
        "PetImages/Cat/1.jpg": b"x", "PetImages/Dog/1.jpg": b"y",
        "PetImages/Cat/deeper/2.jpg": b"z", "PetImages/Cat/deeper.jpg/3.jpg": b"z", "PetImages/4.jpg": b"z",
        "Other/Cat/5.jpg": b"z", "PetImages/Dog/notes.txt": b"t", "PetImages/.cache/6.jpg": b"z",
        "C:/PetImages/Cat/7.jpg": b"z", "\\PetImages\\Cat\\8.jpg": b"z",
    })
    members = sources.list_members(sources.open_source(path), "PetImages")  # PetImages/Cat/ is a candidate too
    assert members.images == [("PetImages/Cat/1.jpg", "Cat"), ("PetImages/Dog/1.jpg", "Dog")]
    outside = "outside PetImages/<class>/"
    assert dict(members.ignored) == {
        "PetImages/Cat/deeper/2.jpg": outside, "PetImages/Cat/deeper.jpg/3.jpg": outside,
        "PetImages/4.jpg": outside, "Other/Cat/5.jpg": outside, "PetImages/Dog/notes.txt": "not an image file name",
        "PetImages/.cache/6.jpg": "hidden folder", "C:/PetImages/Cat/7.jpg": "absolute path",
        "\\PetImages\\Cat\\8.jpg": "absolute path",
    }


def test_summarize_counts_every_field():
    results = [("PetImages/Cat/0.jpg", "Cat", None), ("PetImages/Cat/1.jpg", "Cat", "empty"),
               ("PetImages/Dog/0.jpg", "Dog", None), ("PetImages/Dog/1.jpg", "Dog", None),
               ("PetImages/Dog/2.jpg", "Dog", "truncated"), ("PetImages/Dog/3.jpg", "Dog", "truncated"),
               ("PetImages/Emu/0.jpg", "Emu", "corrupt")]
    ignored = [("readme[1].txt", "outside PetImages/<class>/"), ("PetImages/Cat/Thumbs.db", "not an image file name")]
    assert filter_stage.summarize(results, ignored, "decode", 1.234, "PetImages") == {
        "method": "decode", "root": "PetImages", "images": 7, "kept": 3, "dropped": 4,
        "kept_per_class": {"Cat": 1, "Dog": 2, "Emu": 0},  # a class with nothing kept is listed, with 0
        "dropped_per_reason": {"empty": 1, "not_an_image": 0, "corrupt": 1, "truncated": 2, "too_large": 0,
                               "excluded": 0},
        "ignored_members": 2, "seconds": 1.23, "images_per_second": 5.7,  # 7 checked in 1.234 s
    }
    jfif = filter_stage.summarize([("PetImages/Cat/0.jpg", "Cat", "no_jfif"), ("PetImages/Dog/0.jpg", "Dog", None)],
                                  [], "jfif", 0.0)
    assert jfif["dropped_per_reason"] == {"no_jfif": 1, "excluded": 0} and jfif["kept_per_class"] == {"Cat": 0, "Dog": 1}
    assert jfif["images_per_second"] is None and jfif["seconds"] == 0.0


# --- the exclusion list ----------------------------------------------------------------------------------

def small_archive(workdir: Path) -> Path:
    members = {f"PetImages/{cls}/{i}.jpg": jpeg(10 * k + i) for k, cls in enumerate(("Cat", "Dog")) for i in range(3)}
    members["PetImages/Dog/3.jpg"] = b""  # dropped as empty, and also listed: excluded wins, unread
    return make_zip(workdir / "a.zip", members)


def test_listed_members_are_dropped_as_excluded_with_the_lists_reason(workdir: Path):
    exclude = workdir / "exclude.csv"
    exclude.write_text("member,reason,who,when\n"
                       "PetImages/Cat/1.jpg,\"label: given Cat, 0.98 Dog\",ana,2024-05-01\n"
                       "PetImages/Dog/3.jpg,duplicate of PetImages/Dog/0.jpg,,\n"
                       "PetImages/Cat/1.jpg,listed twice counts once,,\n")
    summary, report = run_filter(workdir, small_archive(workdir), exclude=exclude)
    assert summary["kept_per_class"] == {"Cat": 2, "Dog": 3} and summary["images"] == 7
    assert summary["dropped_per_reason"]["excluded"] == 2 and summary["dropped_per_reason"]["empty"] == 0
    assert {row["member"]: (row["reason"], row["detail"]) for row in report} == {
        "PetImages/Cat/1.jpg": ("excluded", "label: given Cat, 0.98 Dog"),
        "PetImages/Dog/3.jpg": ("excluded", "duplicate of PetImages/Dog/0.jpg")}
    assert not (workdir / "data/clean/Cat/1.jpg").exists()


def test_a_missing_exclusion_list_excludes_nothing(workdir: Path):
    summary, _ = run_filter(workdir, small_archive(workdir), exclude=workdir / "none.csv")
    assert summary["dropped_per_reason"]["excluded"] == 0 and summary["kept"] == 6


@pytest.mark.parametrize("text, message", [
    ("member,reason,who,when\nPetImages/Cat/9.jpg,typo,,\n",
     "exclude.csv: PetImages/Cat/9.jpg is not a class image of "),
    ("member,reason,who,when\nPetImages/Cat/Thumbs.db,not a photo,,\nPetImages/Dog/7.jpg,x,,\n",
     "exclude.csv: PetImages/Cat/Thumbs.db (and 1 more) is not a class image of "),
    ("path,reason\nPetImages/Cat/1.jpg,x\n",
     "exclude.csv: columns ['path', 'reason'] are not ['member', 'reason', 'who', 'when']"),
    ("member,reason,who,when\n/etc/passwd,x,,\n",
     "exclude.csv, line 2: '/etc/passwd' is an absolute path: list archive members as metrics/filter_dropped.csv names them (<root>/<class>/<file>)"),
    ("member,reason,who,when\nPetImages/Cat/../../evil.jpg,x,,\n",
     "exclude.csv, line 2: 'PetImages/Cat/../../evil.jpg' climbs out with '..'"),
    ("member,reason,who,when\nC:\\PetImages\\Cat\\1.jpg,x,,\n", "line 2: 'C:\\\\PetImages"),
    ("member,reason,who,when\nPetImages/Cat/1.jpg,,,\n", "line 2: PetImages/Cat/1.jpg has no reason"),
    ("member,reason,who,when\nPetImages/Cat/1.jpg,a, b,c,d\n", "line 2: 5 values where 4 columns"),
])
def test_a_bad_exclusion_list_is_one_line_and_writes_nothing(workdir: Path, text, message, capsys):
    (workdir / "exclude.csv").write_text(text)
    with pytest.raises(SystemExit) as info:
        run_filter(workdir, small_archive(workdir), exclude=workdir / "exclude.csv")
    assert info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert message in line
    assert not (workdir / "data").exists() and not (workdir / "metrics").exists()


TWO_ROOTS = {f"set/{part}/{cls}/0.jpg": jpeg(i) for i, (part, cls) in
             enumerate((p, c) for p in ("train", "val") for c in ("a", "b"))}


def test_two_candidate_roots_stop_the_stage_until_filter_root_names_one(workdir: Path, capsys):
    path = make_zip(workdir / "a.zip", TWO_ROOTS)
    with pytest.raises(SystemExit) as info:
        run_filter(workdir, path)
    assert info.value.code == 2
    assert capsys.readouterr().err == (f"error: {path}: two candidate roots, set/train/ and set/val/, each holding "
                                       "class folders of images: set filter.root to the one to use\n")
    assert not (workdir / "data").exists() and not (workdir / "metrics").exists()

    text = (workdir / "params.yaml").read_text()
    (workdir / "params.yaml").write_text(text.replace("  root: null", "  root: set/val"))
    summary, report = run_filter(workdir, path)
    assert summary["root"] == "set/val" and summary["kept_per_class"] == {"a": 1, "b": 1}
    assert {row["member"]: row["detail"] for row in report} == {
        "set/train/a/0.jpg": "outside set/val/<class>/", "set/train/b/0.jpg": "outside set/val/<class>/"}
    assert sorted(p.relative_to(workdir / "data/clean").as_posix() for p in (workdir / "data/clean").rglob("*.jpg")) \
        == ["a/0.jpg", "b/0.jpg"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"just some text, not an archive\n" * 40),
     "not a readable zip archive, nor a tar (plain, gzip, bzip2 or xz), nor a folder"),
    (lambda p: p.mkdir(), "a folder; pack it first (catsdogs.data.packing; the download stage does)"),
    (lambda p: None, "archive not found (run the download stage first)"),
])
def test_a_source_that_cannot_be_read_is_one_line(workdir: Path, make, message, capsys):
    path = workdir / "archive"
    make(path)
    with pytest.raises(SystemExit) as info:
        run_filter(workdir, path)
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {path}: {message}\n"
    assert not (workdir / "data").exists() and not (workdir / "metrics").exists()
