import io
import warnings
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.data import images
from catsdogs.errors import UserError

BIG = 89_478_485


def encode(fmt: str, size=(40, 30), mode="RGB", **kwargs) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_good_images_are_kept_by_decode():
    for data in (encode("JPEG"), encode("PNG"), encode("GIF", mode="P"), encode("BMP"), encode("PNG", mode="RGBA"),
                 encode("JPEG", mode="L"), encode("JPEG", mode="CMYK")):
        assert images.check(data, "decode", BIG) is None


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, not an image", "not_an_image"),
        (encode("JPEG")[:1000], "truncated"),
        # A signature and the format's end marker, garbage in between: corrupt. Without the end marker the
        # same bytes are a file cut short, even inside its header: truncated.
        (encode("JPEG")[:20] + bytes(300) + b"\xff\xd9", "corrupt"),
        (b"\x89PNG\r\n\x1a\n" + bytes(50) + b"\x00\x00\x00\x00IEND\xaeB`\x82", "corrupt"),
        (encode("JPEG")[:20] + bytes(300), "truncated"),
        (encode("JPEG")[:100], "truncated"),
        (b"\x89PNG\r\n\x1a\n" + bytes(50), "truncated"),
        (encode("GIF", mode="P")[:20], "truncated"),
    ],
)
def test_bad_files_get_a_specific_reason(data, reason):
    assert images.check(data, "decode", BIG) == reason


def test_declared_size_above_the_limit_is_a_bomb_and_is_not_decoded():
    assert images.check(encode("PNG", size=(100, 100)), "decode", max_pixels=100 * 100 - 1) == "too_large"


def test_jfif_method_is_the_tutorials_first_buffer_rule():
    jpeg = encode("JPEG")
    assert b"JFIF" in jpeg[:20]
    assert images.check(jpeg, "jfif", BIG) is None
    assert images.check(encode("PNG"), "jfif", BIG) == "no_jfif"
    # "JFIF" anywhere in the first 4,096 bytes counts, even in a broken file; beyond that it does not.
    assert images.check(bytes(4000) + b"JFIF", "jfif", BIG) is None
    assert images.check(bytes(4093) + b"JFIF", "jfif", BIG) == "no_jfif"


def test_the_window_is_what_peek_really_returns(tmp_path: Path):
    path = tmp_path / "x.jpg"
    path.write_bytes(bytes(10_000))
    with open(path, "rb") as f:
        assert len(f.peek(10)) == images.JFIF_WINDOW


def test_decode_gives_uint8_rgb_of_the_requested_size():
    for data in (encode("JPEG", size=(200, 120)), encode("PNG", mode="RGBA"), encode("GIF", mode="P")):
        array = images.decode(data, (24, 32))
        assert array.shape == (24, 32, 3) and array.dtype == np.uint8


def write_folder(root: Path, layout: dict[str, list[str]]) -> None:
    for cls, names in layout.items():
        for name in names:
            path = root / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode("JPEG", size=(8, 8)))


def test_index_lists_classes_and_image_files_like_keras(tmp_path: Path):
    write_folder(tmp_path, {"Cat": ["2.jpg", "10.jpg", "a.PNG"], "Dog": ["1.jpeg", "sub/3.jpg"], ".hidden": ["x.jpg"]})
    (tmp_path / "Cat" / "Thumbs.db").write_bytes(b"x")
    paths, labels, names = images.index(tmp_path, seed=None, shuffle=False)
    assert names == ["Cat", "Dog"]
    assert paths == ["Cat/10.jpg", "Cat/2.jpg", "Cat/a.PNG", "Dog/1.jpeg", "Dog/sub/3.jpg"]
    assert labels.tolist() == [0, 0, 0, 1, 1]


def test_the_pixel_limit_itself_is_allowed():
    png = encode("PNG", size=(100, 80))
    assert images.check(png, "decode", max_pixels=8000) is None
    assert images.check(png, "decode", max_pixels=7999) == "too_large"


def test_jfif_anywhere_in_the_window_up_to_its_last_byte():
    assert images.check(bytes(4092) + b"JFIF", "jfif", BIG) is None  # its last byte is the 4,096th
    assert images.check(bytes(4093) + b"JFIF", "jfif", BIG) == "no_jfif"


def test_decode_resizes_with_bilinear_filtering():
    """A one-pixel checkerboard halved is a flat mid-grey with bilinear filtering (as Keras resizes); nearest
    neighbour would keep only the black or only the white pixels."""
    board = (np.indices((64, 48)).sum(axis=0) % 2 * 254).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(board).convert("RGB").save(buffer, "PNG")
    array = images.decode(buffer.getvalue(), (32, 24))
    assert array.shape == (32, 24, 3)
    assert np.abs(array.astype(int) - 127).max() <= 4  # the corners differ by a few levels


def _png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height pixels of 1 bit, with one row of data: opening it allocates nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(width // 8 + 1)))
            + chunk(b"IEND", b""))


def test_filter_max_pixels_really_sets_the_limit_above_twice_pillows():
    """Issue 17: Image.open refuses above twice Pillow's own limit before the check sees the size, so
    filter.max_pixels could not raise it; pixel_limit() sets Pillow's limit to it while opening."""
    huge = _png_header(25_000, 9_000)  # 225 million pixels: more than twice Pillow's 89,478,485
    assert 25_000 * 9_000 > 2 * images.MAX_PIXELS
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(huge))
    with images.pixel_limit(300_000_000), Image.open(io.BytesIO(huge)) as image:
        assert image.size == (25_000, 9_000)
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS  # restored
    assert images.check(huge, "decode", max_pixels=224_999_999) == "too_large"  # the param's limit, not Pillow's
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS


def test_a_tiny_max_pixels_is_the_limit_too():
    assert images.check(encode("PNG", size=(4, 3)), "decode", max_pixels=12) is None
    assert images.check(encode("PNG", size=(4, 3)), "decode", max_pixels=11) == "too_large"
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS


def test_an_undecodable_file_in_the_cleaned_folder_is_one_line(tmp_path: Path):
    """Issue 17: a file put into data/clean by hand was a Pillow traceback from the image cache."""
    bad = tmp_path / "Cat" / "notes.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image\n")
    with pytest.raises(UserError) as info:
        images.decode_file(bad, (8, 8))
    assert str(info.value) == (f"{bad}: not an image this pipeline decodes (no image format recognised): remove it, "
                               "or put it in the archive and let the filter stage check it")
    bad.write_bytes(encode("PNG")[:60])
    with pytest.raises(UserError, match=r"notes\.jpg: not an image this pipeline decodes \(.+\): remove it"):
        images.decode_file(bad, (8, 8))


def test_what_the_filter_kept_above_twice_pillows_limit_decodes_in_training(tmp_path: Path):
    """The filter keeps images up to filter.max_pixels, above Pillow's own limit too: the stages then decode
    them (decode_file, the cleaned folder), where Pillow would refuse them. A JPEG declaring 200 million pixels
    (its data is for 16x16) decodes at its 1/8 draft scale, in about 25 MB."""
    data = bytearray(encode("JPEG", size=(16, 16)))
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", 10_000, 20_000)  # height, width
    big = tmp_path / "big.jpg"
    big.write_bytes(bytes(data))
    assert images.decode_file(big, (8, 8)).shape == (8, 8, 3)
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS
    with pytest.raises(Image.DecompressionBombError):  # a file from elsewhere (catsdogs predict): Pillow's limit
        images.decode(bytes(data), (8, 8))


# Images as they come: each kind decoded to the exact RGB a viewer shows, and kept by the filter's check
# exactly when decode() turns it into RGB.

def save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags.tobytes()


def decoded(data: bytes) -> np.ndarray:
    """decode() at the image's own (displayed) size, so nothing is resized; the filter keeps it too."""
    assert images.check(data, "decode", BIG) is None
    with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as image:
        warnings.simplefilter("ignore")
        width, height = image.size
        turned = images._orientation(image) in (5, 6, 7, 8)
    return images.decode(data, (width, height) if turned else (height, width))


STORED = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                   [[255, 255, 0], [0, 255, 255], [255, 0, 255]]], dtype=np.uint8)  # 2 rows, 3 columns


def test_16_bit_grayscale_is_scaled_to_8_bits_by_rounding_not_clipped():
    values = np.array([[0, 128, 129, 257], [32768, 65280, 65534, 65535]], dtype=np.uint16)
    data = save(Image.fromarray(values), "PNG")
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode.startswith("I")
    expected = np.array([[0, 0, 1, 1], [128, 254, 255, 255]], dtype=np.uint8)  # round(v * 255 / 65535)
    assert (decoded(data) == np.repeat(expected[..., None], 3, axis=2)).all()


def test_palette_images_with_and_without_transparency():
    palette = Image.new("P", (3, 1))
    palette.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 0] + [0] * (256 * 3 - 9))
    palette.putdata([0, 1, 2])
    assert decoded(save(palette, "PNG")).tolist() == [[[10, 20, 30], [200, 100, 0], [0, 0, 0]]]
    # Index 2 transparent: it shows the background (white), not its palette colour (black).
    for fmt in ("PNG", "GIF"):
        assert decoded(save(palette, fmt, transparency=2)).tolist() == [[[10, 20, 30], [200, 100, 0], [255] * 3]]


def test_transparent_pixels_are_composited_on_white():
    rgba = Image.fromarray(np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [0, 0, 0, 0]]], dtype=np.uint8))
    assert decoded(save(rgba, "PNG")).tolist() == [[[10, 20, 30], [255] * 3, [255] * 3]]
    assert decoded(save(rgba, "WEBP", lossless=True)).tolist() == [[[10, 20, 30], [255] * 3, [255] * 3]]
    gray_alpha = Image.fromarray(np.array([[[40, 255], [40, 0]]], dtype=np.uint8), "LA")
    assert decoded(save(gray_alpha, "PNG")).tolist() == [[[40] * 3, [255] * 3]]
    assert images.BACKGROUND == (255, 255, 255)


def test_lossless_formats_decode_to_their_exact_pixels():
    stored = Image.fromarray(STORED)
    for fmt, kwargs in (("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True}), ("GIF", {})):
        assert (decoded(save(stored, fmt, **kwargs)) == STORED).all(), fmt
    gray = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert decoded(save(gray, "PNG")).tolist() == [[[0] * 3, [77] * 3, [255] * 3]]


def test_an_animated_gif_is_its_first_frame():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert (decoded(data) == [255, 0, 0]).all()


def test_a_cmyk_jpeg_is_converted_to_rgb():
    red = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    data = save(red, "JPEG", quality=95)
    assert np.abs(decoded(data).astype(int) - [255, 0, 0]).max() <= 3


@pytest.mark.parametrize("orientation, turn", [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                                (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1)),
                                                (2, lambda a: a[:, ::-1])])
def test_exif_orientation_is_applied(orientation, turn):
    """A 3x2 image stored with orientation 6 is seen turned a quarter clockwise: 2 wide, 3 high."""
    data = save(Image.fromarray(STORED), "PNG", exif=exif(orientation))
    array = decoded(data)
    assert array.shape == turn(STORED).shape and (array == turn(STORED)).all()


def test_exif_orientation_of_a_jpeg_through_draft_decoding_and_decode_file(tmp_path: Path):
    """A phone photo: 160x40 stored, orientation 6, so 40x160 seen. Decoded to 20x80 (width x height), the draft
    scale is chosen for the turned sides (1/2, not 1: the same pixels as the unturned file at 80x20, turned)."""
    rng = np.random.default_rng(1)
    stored = Image.fromarray(np.repeat(rng.integers(0, 255, (5, 20, 3), dtype=np.uint8), 8, axis=0).repeat(8, 1))
    turned, plain = (save(stored, "JPEG", quality=90, exif=exif(o)) for o in (6, 1))
    (tmp_path / "photo.jpg").write_bytes(turned)
    array = images.decode_file(tmp_path / "photo.jpg", (80, 20))
    assert array.shape == (80, 20, 3)
    assert (array == np.rot90(images.decode(plain, (20, 80)), -1)).all()
    assert images.check(turned, "decode", BIG) is None


def test_a_damaged_exif_block_is_no_orientation():
    data = save(Image.fromarray(STORED), "PNG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\x00")
    assert (decoded(data) == STORED).all()


def test_images_without_orientation_decode_as_before_the_orientation_was_applied():
    """The demo's JPEGs have no EXIF orientation: draft decoding and resizing give Pillow's pixels as before."""
    rng = np.random.default_rng(2)
    data = save(Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)), "JPEG")
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (32, 24))
        expected = image.convert("RGB").resize((32, 24), Image.BILINEAR)
    assert (images.decode(data, (24, 32)) == np.asarray(expected)).all()


def test_webp_is_an_image_file_name(tmp_path: Path):
    assert ".webp" in images.IMAGE_EXTENSIONS and images.is_image_name("photo.WEBP")
    (tmp_path / "Cat").mkdir()
    (tmp_path / "Cat" / "a.webp").write_bytes(save(Image.fromarray(STORED), "WEBP"))
    assert images.index(tmp_path, seed=None, shuffle=False)[0] == ["Cat/a.webp"]


PNG = save(Image.fromarray(STORED), "PNG")


@pytest.mark.parametrize("data", [PNG, PNG[:-20], PNG[:60], save(Image.new("RGB", (8, 8)), "JPEG")[:200],
                                  save(Image.fromarray(STORED), "WEBP"), save(Image.fromarray(STORED), "WEBP")[:40],
                                  b"GIF89a" + bytes(20), save(Image.new("CMYK", (8, 8)), "JPEG")[:150]])
def test_the_filter_keeps_exactly_what_decode_turns_into_rgb(data):
    """PNG[:-20] lost its end after all its pixels: it decodes, so it is kept."""
    try:
        images.decode(data, (8, 8))
        decodes = True
    except Exception:  # noqa: BLE001 - whatever Pillow raises
        decodes = False
    assert (images.check(data, "decode", BIG) is None) == decodes


def test_viewed_is_the_full_size_image_that_decode_resizes(tmp_path: Path):
    path = tmp_path / "phone.png"
    path.write_bytes(save(Image.fromarray(STORED), "PNG", exif=exif(6)))
    image = images.viewed(path)
    assert image.mode == "RGB" and (np.asarray(image) == np.rot90(STORED, -1)).all()
