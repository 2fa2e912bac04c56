"""Sources other than the Kaggle zip (catsdogs.data.sources): kinds by content, a folder packed
deterministically, hostile tar members refused before anything is written, class folders found."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.data import archive, packing, sources
from catsdogs.errors import UserError


def jpeg(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            add(tar, name, data)
    return path


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(UserError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def listed(path: Path, root=None, **kwargs) -> archive.Members:
    source = sources.open_source(path, **kwargs)
    try:
        return sources.list_members(source, root)
    finally:
        source.close()


PHOTOS = {"PetImages/Cat/1.jpg": jpeg(1), "PetImages/Cat/2.jpg": jpeg(2), "PetImages/Dog/1.jpg": jpeg(3)}


# Kinds, by content


@pytest.mark.parametrize("mode, expected", [("w", "tar"), ("w:gz", "tar.gz"), ("w:bz2", "tar.bz2"),
                                            ("w:xz", "tar.xz")])
def test_a_tar_is_recognised_by_content_whatever_its_name(tmp_path: Path, mode, expected):
    path = make_tar(tmp_path / "kagglecatsanddogs_5340.zip", PHOTOS, mode)
    assert sources.kind(path) == expected
    assert listed(path).images == [("PetImages/Cat/1.jpg", "Cat"), ("PetImages/Cat/2.jpg", "Cat"),
                                   ("PetImages/Dog/1.jpg", "Dog")]


def test_a_zip_a_folder_and_what_is_neither(tmp_path: Path):
    assert sources.kind(make_zip(tmp_path / "photos.tar.gz", PHOTOS)) == "zip"
    assert sources.kind(tmp_path) == "folder"
    (tmp_path / "notes.zip").write_text("not an archive at all, though long enough to hold a header " * 20)
    assert one_line_error(sources.kind, tmp_path / "notes.zip") == (
        f"{tmp_path / 'notes.zip'}: not a readable zip archive, nor a tar (plain, gzip, bzip2 or xz), nor a folder")
    assert one_line_error(sources.open_source, tmp_path / "gone") == (
        f"{tmp_path / 'gone'}: archive not found (run the download stage first)")
    assert one_line_error(sources.open_source, tmp_path).endswith(": a folder; pack it first (catsdogs.data.packing; "
                                                                  "the download stage does)")
    assert one_line_error(sources.kind, tmp_path / "gone") == f"{tmp_path / 'gone'}: no such file or folder"
    gz_not_tar = tmp_path / "photo.gz"
    import gzip
    gz_not_tar.write_bytes(gzip.compress(jpeg() * 4))
    assert "not a readable gzip-compressed tar" in one_line_error(listed, gz_not_tar)


# A folder, packed


def make_folder(root: Path) -> Path:
    for name, data in {"roses/1.jpg": jpeg(1), "roses/2.png": jpeg(2), "tulips/1.jpg": jpeg(3),
                       "tulips/.DS_Store": b"finder", "notes.txt": b"mine"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_folder_packs_to_the_same_bytes_until_a_file_changes(tmp_path: Path):
    folder = make_folder(tmp_path / "flowers")
    assert packing.pack(folder, tmp_path / "a.zip") == ["tulips/.DS_Store"]
    first = (tmp_path / "a.zip").read_bytes()

    for path in folder.rglob("*"):  # what copying, a file browser or another machine changes
        os.utime(path, (1_700_000_000, 1_700_000_000))
        path.chmod(0o700 if path.is_dir() else 0o600)
    (folder / "tulips/.DS_Store").write_bytes(b"finder, rewritten")
    packing.pack(folder, tmp_path / "b.zip")
    assert (tmp_path / "b.zip").read_bytes() == first

    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist() == ["notes.txt", "roses/1.jpg", "roses/2.png", "tulips/1.jpg"]
        assert {(i.date_time, i.create_system, i.external_attr >> 16, i.compress_type, i.extra, i.comment)
                for i in zf.infolist()} == {((1980, 1, 1, 0, 0, 0), 3, stat.S_IFREG | 0o644, zipfile.ZIP_STORED,
                                             b"", b"")}
    members = listed(tmp_path / "a.zip")
    assert members.classes == ["roses", "tulips"]
    assert members.ignored == [("notes.txt", "outside <class>/ at the top level")]

    (folder / "roses/2.png").write_bytes(jpeg(9))
    packing.pack(folder, tmp_path / "c.zip")
    assert hashlib.sha256((tmp_path / "c.zip").read_bytes()).digest() != hashlib.sha256(first).digest()


def test_a_folder_with_a_symlink_or_unreadable_is_refused(tmp_path: Path):
    folder = make_folder(tmp_path / "flowers")
    (folder / "roses/3.jpg").symlink_to(folder / "roses/1.jpg")
    assert one_line_error(packing.pack, folder, tmp_path / "a.zip").startswith(f"{folder / 'roses/3.jpg'}: a symlink")
    assert not (tmp_path / "a.zip").exists()
    (folder / "roses/3.jpg").unlink()
    assert one_line_error(packing.pack, tmp_path / "gone", tmp_path / "a.zip") == f"{tmp_path / 'gone'}: no such folder"
    if os.geteuid() != 0:  # root reads everything
        (folder / "tulips").chmod(0)
        try:
            assert "folder cannot be read" in one_line_error(packing.pack, folder, tmp_path / "a.zip")
        finally:
            (folder / "tulips").chmod(0o755)


# Hostile tar members: each ignored with one reason, nothing written outside the cleaned folder


def hostile_tar(path: Path, mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in PHOTOS.items():
            add(tar, name, data)
        add(tar, "/abs/evil.jpg", jpeg())
        add(tar, "../evil.jpg", jpeg())
        add(tar, "PetImages/Cat/../../evil2.jpg", jpeg())
        add(tar, "PetImages/Cat/link.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add(tar, "PetImages/Cat/hard.jpg", type=tarfile.LNKTYPE, linkname="PetImages/Cat/1.jpg")
        add(tar, "PetImages/Cat/dev.jpg", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add(tar, "PetImages/Cat/fifo.jpg", type=tarfile.FIFOTYPE)
        add(tar, "PetImages/Dog/1.jpg", jpeg(4))  # a later entry of a name in PHOTOS: the one used
        add(tar, "PetImages/Dog/A.jpg", jpeg(5))
        add(tar, "PetImages/Dog/a.jpg", jpeg(6))
    return path


HOSTILE = {
    "/abs/evil.jpg": "absolute path",
    "../evil.jpg": "path escapes the archive ('..')",
    "PetImages/Cat/../../evil2.jpg": "path escapes the archive ('..')",
    "PetImages/Cat/link.jpg": "symlink entry",
    "PetImages/Cat/hard.jpg": "hard link entry",
    "PetImages/Cat/dev.jpg": "device entry",
    "PetImages/Cat/fifo.jpg": "FIFO entry",
    "PetImages/Dog/1.jpg": "duplicate member name (a later entry of the same name is used)",
}


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_hostile_tar_members_are_ignored_one_line_each_and_nothing_lands_outside(tmp_path: Path, mode):
    path = hostile_tar(tmp_path / "data.tar", mode)
    source = sources.open_source(path)
    members = sources.list_members(source)
    assert dict(members.ignored) == HOSTILE and len(members.ignored) == len(HOSTILE)
    members = archive.separate_clashes(members, str.casefold)  # as on a case-insensitive file system
    assert members.ignored[-1] == ("PetImages/Dog/a.jpg", "same file name as PetImages/Dog/A.jpg on this file "
                                   "system (it does not tell case or Unicode forms apart)")

    out = tmp_path / "box" / "clean"
    out.mkdir(parents=True)
    results = sources.check_source(source, members, out, "decode", 10**6, 1)
    assert sorted(results) == [("PetImages/Cat/1.jpg", "Cat", None), ("PetImages/Cat/2.jpg", "Cat", None),
                               ("PetImages/Dog/1.jpg", "Dog", None), ("PetImages/Dog/A.jpg", "Dog", None)]
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["box/clean/Cat/1.jpg", "box/clean/Cat/2.jpg",
                       "box/clean/Dog/1.jpg", "box/clean/Dog/A.jpg", "data.tar"]
    assert (out / "Dog/1.jpg").read_bytes() == jpeg(4)  # the last entry of the name


def test_tar_and_zip_of_the_same_members_sort_them_alike(tmp_path: Path):
    members = {**PHOTOS, "readme[1].txt": b"x", "PetImages/Cat/Thumbs.db": b"x", "PetImages/.cache/6.jpg": b"x",
               "PetImages/Cat/deeper/2.jpg": jpeg(), "Other/Cat/5.jpg": jpeg(), "../evil.jpg": jpeg()}
    zipped = make_zip(tmp_path / "a.zip", members)
    expected = listed(zipped)
    assert expected.root == "PetImages" and expected.images == sorted(
        (name, name.split("/")[1]) for name in PHOTOS if name.startswith("PetImages/"))
    assert dict(expected.ignored)["Other/Cat/5.jpg"] == "outside PetImages/<class>/"
    assert listed(make_tar(tmp_path / "a.tar.xz", members, "w:xz")) == expected


def test_a_bomb_is_never_inflated(tmp_path: Path):
    big = {**PHOTOS, "PetImages/Cat/bomb.jpg": bytes(3 << 20)}  # 3 MiB of zeros; max_pixels 1000 allows ~1 MiB
    plain = make_tar(tmp_path / "plain.tar", big)
    source = sources.open_source(plain, max_pixels=1000)
    members = sources.list_members(source)
    out = tmp_path / "clean"
    results = sources.check_source(source, members, out, "decode", 1000, 1)
    assert ("PetImages/Cat/bomb.jpg", "Cat", "too_large") in results
    assert not (out / "PetImages/Cat/bomb.jpg").exists()

    packed = make_tar(tmp_path / "packed.tar.gz", big, "w:gz")  # a compressed tar cannot skip it unread
    assert one_line_error(listed, packed, max_pixels=1000) == (
        f"{packed}: member PetImages/Cat/bomb.jpg declares 3,145,728 bytes, more than an image of 1,000 pixels "
        "(filter.max_pixels) can take; a compressed tar cannot skip it without inflating it (a decompression "
        "bomb?): remove it")


@pytest.mark.parametrize("mode", ["w", "w:xz"])
def test_an_extended_header_bomb_is_refused_before_it_is_read(tmp_path: Path, mode):
    path = tmp_path / "pax.tar"
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        add(tar, "PetImages/Cat/1.jpg", jpeg(1))
        add(tar, "PetImages/Dog/1.jpg", jpeg(2), pax_headers={"comment": "x" * (3 << 20)})
    assert one_line_error(listed, path, max_pixels=1000) == (
        f"{path}: a header after member PetImages/Cat/1.jpg declares 3,146,240 bytes of extended header, more "
        "than an image of 1,000 pixels (filter.max_pixels) can take (a decompression bomb?)")
    assert len(listed(path).images) == 2  # under the default bound, a long header is fine


@pytest.mark.parametrize("mode, where", [("w", " after member PetImages/"), ("w:gz", " after member PetImages/"),
                                         ("w:bz2", " (")])  # bzip2 decompresses a whole 900 kB block or nothing
def test_a_cut_off_tar_names_the_last_good_member(tmp_path: Path, mode, where):
    whole = make_tar(tmp_path / "whole", {f"PetImages/{c}/{i}.jpg": jpeg(i) * 8 for c in ("Cat", "Dog")
                                          for i in range(4)}, mode).read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    message = one_line_error(listed, cut)
    assert message.startswith(f"{cut}: not a readable ") and where in message
    assert message.endswith("delete it and download again")


# Class folders, found


def names_listed(tmp_path: Path, names, **kwargs) -> archive.Members:
    return listed(make_tar(tmp_path / "t.tar.gz", {n: jpeg() for n in names}, "w:gz"), **kwargs)


def test_the_root_is_the_single_top_folder_or_the_top_level(tmp_path: Path):
    members = names_listed(tmp_path, ["flowers/roses/1.jpg", "flowers/tulips/1.png", "flowers/daisy/2.jpg",
                                      "flowers/x.jpg", "LICENSE.txt", "__MACOSX/flowers/roses/._1.jpg"])
    assert members.classes == ["daisy", "roses", "tulips"]
    assert dict(members.ignored) == {"flowers/x.jpg": "outside flowers/<class>/",
                                     "LICENSE.txt": "outside flowers/<class>/",
                                     "__MACOSX/flowers/roses/._1.jpg": "outside flowers/<class>/"}
    members = names_listed(tmp_path, ["0/a.png", "1/b.png", "2/c.png", "./2/d.png", "2/deep/e.png"])
    assert members.classes == ["0", "1", "2"] and len(members.images) == 4
    assert members.ignored == [("2/deep/e.png", "outside <class>/ at the top level")]
    # a folder of class folders that is not the top one, but the only one
    assert names_listed(tmp_path, ["data/v2/a/1.jpg", "data/v2/b/1.jpg", "data/old.txt"]).classes == ["a", "b"]


def test_two_candidate_roots_one_class_or_no_image_are_one_line_each(tmp_path: Path):
    t = tmp_path / "t.tar.gz"
    assert one_line_error(names_listed, tmp_path, ["set/train/a/1.jpg", "set/train/b/1.jpg", "set/val/a/1.jpg",
                                                   "set/val/b/1.jpg"]) == (
        f"{t}: two candidate roots, set/train/ and set/val/, each holding class folders of images: "
        "set filter.root to the one to use")
    assert names_listed(tmp_path, ["set/train/a/1.jpg", "set/train/b/1.jpg", "set/val/a/1.jpg",
                                   "set/val/b/1.jpg"], root="set/val").images == [("set/val/a/1.jpg", "a"),
                                                                                  ("set/val/b/1.jpg", "b")]
    assert one_line_error(names_listed, tmp_path, ["flowers/roses/1.jpg", "flowers/roses/2.jpg"]) == (
        f"{t}: only one class folder, roses, under flowers/<class>/: at least two classes are needed")
    assert one_line_error(names_listed, tmp_path, ["flowers/roses/1.txt", "flowers/a.jpg"]) == (
        f"{t}: no images in class folders flowers/<class>/ (image files end in .bmp, .gif, .jpeg, .jpg, .png, .webp); "
        "set filter.root if they are elsewhere")
    empty = make_tar(tmp_path / "empty.tar", {})
    assert one_line_error(listed, empty).startswith(f"{empty}: no images in class folders <class>/ at the top")


def test_the_download_packs_a_folder_and_verifies_it_like_an_archive(tmp_path: Path):
    from catsdogs.data.fetch import DownloadError, fetch

    folder = make_folder(tmp_path / "flowers")
    options = dict(size=None, timeout=1, retries=0, partial_dir=tmp_path / "partial", progress=False)
    digest = fetch(str(folder), tmp_path / "raw" / "a.zip", sha256=None, **options)
    assert digest == hashlib.sha256((tmp_path / "raw" / "a.zip").read_bytes()).hexdigest()
    (folder / "roses/1.jpg").touch()
    assert fetch(folder.as_uri(), tmp_path / "raw" / "b.zip", sha256=digest, **options) == digest  # pinned
    (folder / "roses/1.jpg").write_bytes(jpeg(7))
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        fetch(str(folder), tmp_path / "raw" / "c.zip", sha256=digest, **options)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["a.zip", "b.zip"]


def test_a_tar_gz_is_checked_exactly_as_the_zip_of_the_same_files(tmp_path: Path):
    members = {**PHOTOS, "PetImages/Cat/empty.jpg": b"", "PetImages/Dog/cut.jpg": jpeg(8)[:-300],
               "PetImages/Dog/text.jpg": b"hello"}
    found = {}
    for name, path in (("zip", make_zip(tmp_path / "a.zip", members)),
                       ("tar.gz", make_tar(tmp_path / "a.tar.gz", members, "w:gz"))):
        source = sources.open_source(path)
        out = tmp_path / name
        results = sources.check_source(source, sources.list_members(source), out, "decode", 10**6, 2)
        found[name] = sorted(results), sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert found["tar.gz"] == found["zip"]
    assert {name: reason for name, _, reason in found["zip"][0]} == {
        "PetImages/Cat/1.jpg": None, "PetImages/Cat/2.jpg": None, "PetImages/Cat/empty.jpg": "empty",
        "PetImages/Dog/1.jpg": None, "PetImages/Dog/cut.jpg": "truncated", "PetImages/Dog/text.jpg": "not_an_image"}
    assert found["zip"][1] == ["Cat/1.jpg", "Cat/2.jpg", "Dog/1.jpg"]
