"""The one image indexer, checker and decoder.

Filtering, training, export and predict use the same decoder (Pillow) and the same conversion to RGB
(`_rgb`), so "kept by the filter" means exactly "loads in training as a 3-channel image". The indexer lists
files in the order and with the labels that `keras.utils.image_dataset_from_directory` uses, so the split
matches the tutorial's file for file.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import PIL
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from catsdogs.errors import UserError, first_line

# Image file names: Keras' allow-list (keras.src.utils.image_dataset_utils.ALLOWLIST_FORMATS) and WebP, which
# phones and browsers save. The real archive holds no .webp file, so the tutorial's split is unchanged.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")

# What the filter can say about a file it drops, and what each reason means.
REASONS = {
    "empty": "zero-byte file",
    "not_an_image": "no known image signature and no decoder recognises it",
    "corrupt": "looks like an image but cannot be decoded",
    "truncated": "image data ends early",
    "too_large": "declared dimensions above filter.max_pixels (decompression bomb)",
    "no_jfif": "no 'JFIF' in the first 4,096 bytes (method: jfif, the tutorial's check)",
    "excluded": "listed in the exclusion list (data/exclude.csv); the detail is the list's reason",
}

# Larger images are dropped as decompression bombs: Pillow's own limit, unless filter.max_pixels sets another.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
_LIMIT = threading.Lock()
_lifted = 0  # decode_file() calls in progress, in threads, with Pillow's limit lifted
_saved_limit = MAX_PIXELS


@contextlib.contextmanager
def pixel_limit(max_pixels: int):
    """Pillow's bomb limit set to `max_pixels` while opening: it is one global
    (Image.MAX_IMAGE_PIXELS), and Image.open refuses above twice it before any other check, so
    filter.max_pixels could not raise it."""
    with _LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@contextlib.contextmanager
def _checked_already():
    """Pillow's limit lifted while files of the cleaned folder decode, in as many threads as decode at once:
    the filter checked each against filter.max_pixels, which may be above Pillow's limit."""
    global _lifted, _saved_limit
    with _LIMIT:
        _lifted += 1
        if _lifted == 1:
            _saved_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        with _LIMIT:
            _lifted -= 1
            if _lifted == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit


def max_file_bytes(max_pixels: int) -> int:
    """The most bytes an image of at most `max_pixels` pixels takes (uncompressed RGBA plus 1 MiB of headers
    and metadata): a larger file is refused before it is read or inflated (a zip bomb)."""
    return max_pixels * 4 + 2**20


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")

# The tutorial's `open(path, "rb").peek(10)` returns the reader's whole first buffer, sized from the file
# system's block size: 4,096 bytes on common systems (ext4, xfs, APFS), not 10.
JFIF_WINDOW = 4096


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _end_missing(data: bytes) -> bool:
    """Whether a file with an image signature lacks its format's end: JPEG's EOI marker, PNG's IEND chunk,
    GIF's trailer, or the length that a WebP (RIFF) or BMP header declares. Only asked about files that do
    not decode, to tell "truncated" from "corrupt"; a file that decodes is kept whatever follows its end."""
    if data.startswith(b"\xff\xd8\xff"):
        return not data.endswith(b"\xff\xd9")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return not data.endswith(b"IEND\xaeB`\x82")
    if data.startswith((b"GIF87a", b"GIF89a")):
        return not data.endswith(b";")
    if data.startswith((b"RIFF", b"BM")) and len(data) >= 6:
        declared = int.from_bytes(data[2:6] if data[:2] == b"BM" else data[4:8], "little")
        declared += 8 if data[:4] == b"RIFF" else 0
        return len(data) < 8 or len(data) < declared
    return False


# What a transparent pixel shows through to: white, as a viewer shows it on a page. The colour stored under
# a transparent pixel is often arbitrary (black, or what was cut out), so dropping alpha would show it.
BACKGROUND = (255, 255, 255)
_WITH_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the stored image by a quarter


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = as stored); 1 when there is none or the EXIF block cannot be read."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block does not make the pixels unusable
        return 1


def _rgb(image: Image.Image, draft: tuple[int, int] | None = None) -> Image.Image:
    """The image as a viewer shows it, as 3-channel 8-bit RGB: the first frame; its EXIF orientation applied
    (phones store photos rotated); 16-bit values scaled to 8 bits (Pillow's own conversion would clip every
    value above 255 to white); transparency composited on BACKGROUND; CMYK converted by Pillow.

    `draft` (width, height): a JPEG is decoded at the smallest of its 1/2, 1/4, 1/8 scales not below it, as
    seen after its orientation is applied. Without an orientation to apply the pixels are Pillow's as before.
    """
    orientation = _orientation(image)
    if draft is not None:
        image.draft("RGB", draft[::-1] if orientation in _SWAPS_SIDES else draft)
    if 2 <= orientation <= 8:
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT:
        wide = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))  # 65535 -> 255, 257 * k -> k
    if image.mode in _WITH_ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    return image.convert("RGB")


def check(data: bytes, method: str, max_pixels: int) -> str | None:
    """Why a file must be dropped, as a key of REASONS, or None to keep it.

    `decode` keeps a file exactly when Pillow decodes it and `_rgb` turns it into RGB pixels, as training's
    decode() does (at full size: every pixel is decoded). libjpeg
    decodes JPEGs with damaged entropy-coded data with only a warning, which Pillow does not surface:
    those are kept, with whatever pixels libjpeg reconstructs, as they would be in training.
    """
    if method == "jfif":
        return None if b"JFIF" in data[:JFIF_WINDOW] else "no_jfif"
    if not data:
        return "empty"
    try:
        with warnings.catch_warnings(), pixel_limit(max_pixels):
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > max_pixels:
                    return "too_large"  # decided from the header alone: the pixels are never allocated
                _rgb(image).load()
    except Image.DecompressionBombError:
        return "too_large"
    except UnidentifiedImageError:
        if not data.startswith(_SIGNATURES):
            return "not_an_image"
        return "truncated" if _end_missing(data) else "corrupt"
    except OSError as exc:
        return "truncated" if "truncated" in str(exc) or _end_missing(data) else "corrupt"
    except Exception:  # noqa: BLE001 - any decoder failure means the file cannot be used
        return "truncated" if data.startswith(_SIGNATURES) and _end_missing(data) else "corrupt"
    return None


# Part of every decoded-image cache's key (catsdogs.data.imagecache): bump it whenever decode() changes the pixels
# it returns, and every cache, in the workspace and in queued experiments' copies alike, is decoded anew.
# Pillow's version is part of it too, since its resizing and its JPEG decoder can change between releases.
# v2: EXIF orientation applied, 16-bit scaled by rounding (was: the high byte), transparency on white.
DECODER = f"decode-v2-pillow-{PIL.__version__}"

# What a caller outside the project does to an image file before the model sees it: exactly decode() (export
# metadata, catsdogs.serving.exports).
PREPROCESSING = ("decode the image file (JPEG, PNG, GIF: its first frame, BMP or WebP), a JPEG at the smallest of "
                 "its 1/2, 1/4 or 1/8 scales not below the input size (Pillow's Image.draft('RGB', (width, height)), "
                 "width and height swapped when its EXIF orientation turns it by a quarter); apply its EXIF "
                 "orientation (Pillow's ImageOps.exif_transpose); convert it to 3-channel 8-bit RGB (16-bit values "
                 "v scaled to round(v * 255 / 65535), transparent pixels composited on white, CMYK by Pillow's "
                 "convert); resize it to the input's height and width, ignoring its aspect ratio, with bilinear "
                 "filtering (Pillow's Image.BILINEAR); stack the images as one uint8 array (N, height, width, 3) "
                 "of values 0-255: the model rescales them itself")


def decode(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Decode to RGB (`_rgb`) and resize to `size` (height, width) with bilinear filtering: a uint8 array.

    JPEG's draft mode lets libjpeg scale by 1/2, 1/4 or 1/8 while decoding (never below `size`), which is
    several times faster on the real archive's 400x360 photos than decoding in full and then resizing.
    """
    height, width = size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as image:
            rgb = _rgb(image, draft=(width, height))
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def decode_file(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """decode() of a file of the cleaned folder; UserError naming it if it cannot be (one put there by hand)."""
    data = Path(path).read_bytes()
    try:
        with _checked_already():
            return decode(data, size)
    except UnidentifiedImageError:
        detail = "no image format recognised"
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds of errors for a bad file
        detail = first_line(exc)
    raise UserError(f"{path}: not an image this pipeline decodes ({detail}): remove it, or put it in the archive "
                    "and let the filter stage check it")


def viewed(path: str | os.PathLike) -> Image.Image:
    """A file of the cleaned folder at full size, as decode() sees it before resizing (upright, RGB): for what
    looks at the images themselves (the review's hashes and contact sheet)."""
    with warnings.catch_warnings(), _checked_already():
        warnings.simplefilter("ignore")
        with Image.open(path) as image:
            return _rgb(image)


def class_names(directory: str | os.PathLike) -> list[str]:
    """Class folders in Keras' order: sorted, hidden ones skipped."""
    directory = Path(directory)
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def index(directory: str | os.PathLike, seed: int | None, shuffle: bool = True):
    """List images under `directory`/<class>/ as Keras does: (paths, labels, class names).

    Files are walked recursively per class in sorted order and, when `shuffle`, shuffled with
    numpy's RandomState(seed) exactly like keras.src.utils.dataset_utils.index_directory.
    Paths are relative to `directory`, with '/' separators.
    """
    directory = Path(directory)
    names = class_names(directory)
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        class_dir = directory / name
        for root, _, files in sorted(os.walk(class_dir), key=lambda entry: entry[0]):
            for fname in sorted(files):
                if is_image_name(fname):
                    rel = os.path.relpath(os.path.join(root, fname), directory)
                    paths.append(rel.replace(os.sep, "/"))
                    labels.append(label)
    labels_array = np.asarray(labels, dtype=np.int32)
    if shuffle:
        np.random.RandomState(seed).shuffle(paths)
        np.random.RandomState(seed).shuffle(labels_array)
    return paths, labels_array, names
