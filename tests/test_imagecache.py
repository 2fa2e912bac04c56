"""The decoded-image cache: decoded once, reused (by a copy of the folder too, and by a second process
decoding the same images at once), and rebuilt when the images, the size or the decoder change or the cache
file is damaged; where it lives (catsdogs.caches)."""

import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs import caches
from catsdogs.data import imagecache, images, splits
from catsdogs.errors import UserError
from conftest import ENV, ROOT


def test_images_are_decoded_once_and_the_cache_follows_the_data(folder, tmp_path):
    data = splits.assign(folder, 0.25, seed=1)
    cache = tmp_path / "cache"
    array = imagecache.load(folder, data.paths, (16, 24), cache)
    assert array.shape == (24, 16, 24, 3) and array.dtype == np.uint8
    assert np.array_equal(array[5], images.decode_file(folder / data.paths[5], (16, 24)))
    [first] = cache.glob("*.npy")
    inode = first.stat().st_ino

    again = imagecache.load(folder, data.paths, (16, 24), cache)  # reused, not rewritten
    assert np.array_equal(again, array) and first.stat().st_ino == inode

    imagecache.load(folder, data.paths, (8, 8), cache)  # another size: a file of its own, beside the first
    [second] = set(cache.glob("*.npy")) - {first}
    assert "8x8" in second.name

    os.remove(folder / "Cat" / "3.jpg")  # the data changed: a new cache
    data = splits.assign(folder, 0.25, seed=1)
    assert imagecache.load(folder, data.paths, (8, 8), cache).shape[0] == 23
    assert len(list(cache.glob("*.npy"))) == 3 and sorted(p.suffix for p in cache.iterdir()) == [".npy"] * 3


def test_a_copy_with_new_mtimes_reuses_the_cache_and_a_changed_image_does_not(folder, tmp_path, caplog):
    """The key is each image's path and content: a queued experiment's fresh checkout (new mtimes) finds the
    workspace's file; an image changed in place, with its size and mtime kept, gets a new one."""
    data = splits.assign(folder, 0.25, seed=1)
    cache = tmp_path / "cache"
    original = np.array(imagecache.load(folder, data.paths, (8, 8), cache))
    [made] = cache.glob("*.npy")

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, copy_function=shutil.copyfile)  # new mtimes, as `dvc checkout` gives
    later = time.time_ns() + 10**9
    for path in data.paths:
        os.utime(copy / path, ns=(later, later))
    with caplog.at_level(logging.INFO, logger="catsdogs.data.imagecache"):
        reused = imagecache.load(copy, data.paths, (8, 8), cache)
    assert [r.getMessage() for r in caplog.records if r.name == imagecache.log.name] == [
        f"reusing decoded images from {made}"]
    assert np.array_equal(reused, original) and list(cache.glob("*.npy")) == [made]

    changed = copy / data.paths[0]
    stat = changed.stat()
    flipped = io.BytesIO()  # the same picture upside down, padded to the same size, with the same mtime
    Image.fromarray(np.flipud(images.decode_file(changed, (20, 30)))).save(flipped, "JPEG", quality=30)
    assert flipped.tell() < stat.st_size
    changed.write_bytes(flipped.getvalue().ljust(stat.st_size, b"\0"))
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (changed.stat().st_size, changed.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    fresh = imagecache.load(copy, data.paths, (8, 8), cache)
    assert len(list(cache.glob("*.npy"))) == 2
    assert np.array_equal(fresh[0], images.decode_file(changed, (8, 8))) and not np.array_equal(fresh[0], original[0])
    assert np.array_equal(fresh[1:], original[1:])


def test_the_least_recently_used_caches_beyond_keep_are_removed(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(imagecache, "KEEP", 3)
    data = splits.assign(folder, 0.25, seed=1)
    cache = tmp_path / "cache"
    digests = splits.content_digests(folder, data.paths)
    for n, side in enumerate((4, 5, 6)):
        imagecache.load(folder, data.paths, (side, side), cache, digests=digests)
        path = imagecache.cache_path(cache, data.paths, digests, (side, side))
        os.utime(path, ns=(n * 10**9, n * 10**9))  # made one after the other, 4x4 first
    imagecache.load(folder, data.paths, (4, 4), cache, digests=digests)  # reused: now the most recent
    imagecache.load(folder, data.paths, (7, 7), cache, digests=digests)
    assert sorted(p.name.split("-")[1] for p in cache.glob("*.npy")) == ["4x4", "6x6", "7x7"]


# Decodes the folder into the cache, as a stage does, logging to stderr
DECODE = """
import logging, sys
from catsdogs.data import imagecache, splits
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
folder, cache = sys.argv[1:]
data = splits.assign(folder, 0.25, seed=1)
print(int(imagecache.load(folder, data.paths, (16, 24), cache).sum()))
"""


def test_two_processes_decoding_the_same_images_at_once_decode_them_once(folder, tmp_path):
    """The second waits on the lock, then reuses what the first wrote. To make them meet for certain, this
    test holds the lock until both wait on it."""
    data = splits.assign(folder, 0.25, seed=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    target = imagecache.cache_path(cache, data.paths, splits.content_digests(folder, data.paths), (16, 24))
    env = dict(ENV, PYTHONPATH=str(ROOT / "src"))
    logs = [tmp_path / f"{n}.log" for n in range(2)]
    with imagecache.locked(target):
        processes = [subprocess.Popen([sys.executable, "-c", DECODE, str(folder), str(cache)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=log.open("w")) for log in logs]
        deadline = time.monotonic() + 60
        while not all("waiting for another run" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes), \
                [log.read_text() for log in logs]
            time.sleep(0.05)
    sums = [p.communicate(timeout=60)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [log.read_text() for log in logs]
    texts = [log.read_text() for log in logs]
    assert sorted(sum("decoded 24 images in " in line for line in t.splitlines()) for t in texts) == [0, 1], texts
    assert sum(f"reusing decoded images from {target}" in t for t in texts) == 1, texts
    assert sums[0] == sums[1] and int(sums[0]) > 0
    assert [p.name for p in cache.iterdir()] == [target.name]  # no lock file, no temporary file left


def test_the_caches_folder_comes_from_the_environment(folder, monkeypatch, tmp_path):
    monkeypatch.setenv(caches.ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert caches.path(caches.IMAGES) == tmp_path / "mine" / "images"
    from catsdogs.stages import train

    # the stages pass no folder unless given one (parsing their arguments creates none); then the shared one
    assert train.parse_args(["d", *[f"--{o}=x" for o in ("model", "classes", "split", "checkpoints", "live", "work")]]
                            ).image_cache is None and not (tmp_path / "mine").exists()
    data = splits.assign(folder, 0.25, seed=1)
    imagecache.load(folder, data.paths, (8, 8))
    assert [p.parent for p in (tmp_path / "mine").rglob(imagecache.PATTERN)] == [tmp_path / "mine" / "images"]
    assert (tmp_path / "mine" / caches.TAG).read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    monkeypatch.delenv(caches.ENV)
    assert caches.path(caches.JAX) == tmp_path / "xdg" / "catsdogs" / "jax"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert caches.root() == tmp_path / "home" / ".cache" / "catsdogs"
    monkeypatch.setenv(caches.ENV, "relative")
    with pytest.raises(UserError, match="CATSDOGS_CACHE_DIR=relative: not an absolute path"):
        caches.root()


def test_the_tests_caches_are_in_the_system_temporary_folder():
    assert Path(tempfile.gettempdir()) in caches.root().parents




@pytest.mark.parametrize("damage", ["truncated", "foreign", "not_npy"])
def test_a_damaged_or_foreign_cache_is_rebuilt_with_one_log_line(folder, tmp_path, caplog, damage):
    data = splits.assign(folder, 0.25, seed=1)
    cache = tmp_path / "cache"
    good = np.array(imagecache.load(folder, data.paths, (16, 24), cache))
    [path] = cache.glob("*.npy")
    if damage == "truncated":  # a full disk, a copy cut short
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "foreign":  # an array of another shape under this name
        np.save(path, np.zeros((3, 16, 24, 3), dtype=np.uint8))
    else:
        path.write_bytes(b"not a numpy file")
    with caplog.at_level(logging.INFO, logger="catsdogs.data.imagecache"):
        healed = imagecache.load(folder, data.paths, (16, 24), cache, mode="memory")
    assert np.array_equal(healed, good)
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decoding the images again")]
    assert len(notes) == 1 and str(path) in notes[0]
    assert imagecache.problem(path, good.shape) is None  # the file on disk is whole again


def test_a_decoder_change_gives_a_new_cache(folder, tmp_path, monkeypatch):
    """The decoder's version is part of the key: old pixels are never reused after a decoding change, in the
    workspace or in a queued experiment's fresh copy alike."""
    data = splits.assign(folder, 0.25, seed=1)
    cache = tmp_path / "cache"
    imagecache.load(folder, data.paths, (8, 8), cache)
    [before] = cache.glob("*.npy")
    monkeypatch.setattr(images, "DECODER", images.DECODER + "-changed")
    imagecache.load(folder, data.paths, (8, 8), cache)
    [after] = set(cache.glob("*.npy")) - {before}  # a file of its own: the old pixels are not read
    assert after.name != before.name


def test_an_undecodable_file_is_one_line_naming_it_and_no_cache_is_left(folder, tmp_path):
    """Issue 17: a file put into data/clean by hand was a Pillow traceback from here."""
    (folder / "Cat" / "5.jpg").write_bytes(b"<html>not found</html>\n")
    data = splits.assign(folder, 0.25, seed=1)
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as info:
        imagecache.load(folder, data.paths, (8, 8), cache)
    assert str(info.value) == (f"{folder / 'Cat' / '5.jpg'}: not an image this pipeline decodes (no image format "
                               "recognised): remove it, or put it in the archive and let the filter stage check it")
    assert list(cache.iterdir()) == []
