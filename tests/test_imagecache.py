"""The decoded-image cache: decoded once, reused, and rebuilt when the files, the size or the decoder change
or the cache file is damaged."""

import logging
import os

import numpy as np
import pytest

from catsdogs.data import imagecache, images, splits
from catsdogs.errors import UserError


def test_images_are_decoded_once_and_the_cache_follows_the_data(folder, tmp_path):
    data = splits.assign(folder, 0.25, seed=1)
    cache = tmp_path / "cache"
    array = imagecache.load(folder, data.paths, (16, 24), cache)
    assert array.shape == (24, 16, 24, 3) and array.dtype == np.uint8
    assert np.array_equal(array[5], images.decode_file(folder / data.paths[5], (16, 24)))
    [first] = cache.glob("*.npy")
    mtime = first.stat().st_mtime_ns

    again = imagecache.load(folder, data.paths, (16, 24), cache)  # reused, not rewritten
    assert np.array_equal(again, array) and first.stat().st_mtime_ns == mtime

    imagecache.load(folder, data.paths, (8, 8), cache)  # another size: a new cache replaces the old
    [second] = cache.glob("*.npy")
    assert second != first and "8x8" in second.name

    os.remove(folder / "Cat" / "3.jpg")  # the data changed: a new cache
    data = splits.assign(folder, 0.25, seed=1)
    assert imagecache.load(folder, data.paths, (8, 8), cache).shape[0] == 23
    assert [p.name for p in cache.iterdir()] != [second.name]




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
    [after] = cache.glob("*.npy")
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
