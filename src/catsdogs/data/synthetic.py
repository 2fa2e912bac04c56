"""An offline stand-in for the Kaggle Cats vs Dogs archive (kagglecatsanddogs_5340.zip), or for a user's own.

The pipeline and its tests must run without network, so this writes an archive with the real archive's
layout by default (a zip of PetImages/Cat/0.jpg ..., a Thumbs.db per class, the licence PDF and readme[1].txt
at the top) and with the real archive's kinds of odd files mixed in, so that the filter has something to
drop. The layout can be another's: any 2 to 12 class names, a zip or a .tar.gz, with a top folder or none.

The classes differ only in the outline of one figure: "Cat" (the first class) has pointed ears on top of
its head, "Dog" (the second) has rounded ears hanging at the sides; further classes have round ears on top
or none, and from the fifth on a diamond-shaped or triangular head (EARS, HEADS). Background, colours, position,
scale, rotation, clutter, noise and JPEG quality are drawn from the same distributions for every class, so a
model has to learn the shape; no colour or brightness statistic gives the label away (the first two classes'
figures also cover the same area on average).

Everything comes from the seed: the same arguments give a byte-identical archive. Each image has its own
random stream, so an image looks the same whatever the other arguments (e.g. pathology_rate) are.

Besides the odd files, the archive can hold the faults a data review looks for (all off by default):
images filed under the wrong class, images with no figure ("no pet"), and near-duplicates (a copy of
another image of its class, re-encoded, resized and slightly cropped). `faults()` says which, like `plan()`.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import struct
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from catsdogs.atomic import atomic_path
from catsdogs.params import (SYNTHETIC_CLASSES, SYNTHETIC_FORMATS, SYNTHETIC_MIN_SIDE, SYNTHETIC_TOP_FOLDER,
                             check_synthetic, synthetic_count)

CLASSES = SYNTHETIC_CLASSES  # the default class folders, the real archive's
FORMAT, TOP_FOLDER = SYNTHETIC_FORMATS[0], SYNTHETIC_TOP_FOLDER

# What each class's figure looks like, by its position among the classes: ears by position modulo 4, head by
# position // 4 (params.SYNTHETIC_MAX_CLASSES = 12 figures).
EARS = ("pointed ears on top of its head", "rounded ears hanging at the sides", "round ears on top of its head",
        "no ears")
HEADS = ("a round head", "a diamond-shaped head", "a triangular head")
_HEAD_POINTS = (24, 4, 3)


def figure(label: int) -> str:
    return f"a figure with {HEADS[label // len(EARS)]} and {EARS[label % len(EARS)]}"

# Odd files like the real archive's, with what images.check(data, "decode", ...) says about each.
# The jfif method's outcome is left to the bytes: it keeps exactly the files with b"JFIF" near the start.
PATHOLOGIES = {
    "zero_byte": {
        "decode": "empty",
        "description": "a zero-byte file (the real archive has two)",
    },
    "truncated_jpeg": {
        "decode": "truncated",
        "description": "a JFIF JPEG cut off 30-70% into its image data; the jfif check keeps it",
    },
    "exif_jpeg": {
        "decode": None,
        "description": "a valid JPEG with an Exif header instead of JFIF: fine, but the jfif check drops it",
    },
    "png_as_jpg": {
        "decode": None,
        "description": "a valid PNG named .jpg: fine, but the jfif check drops it",
    },
    "gif_as_jpg": {
        "decode": None,
        "description": "a valid GIF named .jpg: fine, but the jfif check drops it",
    },
    "bmp_as_jpg": {
        "decode": None,
        "description": "a valid BMP named .jpg: fine, but the jfif check drops it",
    },
    "corrupt_jfif": {
        "decode": "corrupt",
        "description": "a JFIF JPEG whose frame names an undefined quantisation table: it opens, but "
        "cannot be decoded; the jfif check keeps it",
    },
    "not_an_image": {
        "decode": "not_an_image",
        "description": "an HTML error page saved as .jpg",
    },
}

# Fixed metadata so that the archive's bytes depend on the arguments only.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
TAR_MTIME = 315532800  # ZIP_DATE in seconds since the epoch (UTC), every tar member's time
MAX_ROTATION = math.radians(30)

# Half-width of a hanging ear in head units: it makes both figures cover the same area on average
# (tests/test_synthetic.py::test_figure_area_is_balanced measures it).
DOG_EAR_WIDTH = 0.25


class Layout:
    """Where each class image goes: `<top_folder>/<class>/<index>.jpg`, or `<class>/<index>.jpg` without one."""

    def __init__(self, classes=CLASSES, top_folder: str | None = TOP_FOLDER):
        self.classes, self.top_folder = tuple(classes), top_folder

    def folder(self, label: int) -> str:
        return f"{self.top_folder}/{self.classes[label]}" if self.top_folder else self.classes[label]

    def member(self, label: int, index: int) -> str:
        return f"{self.folder(label)}/{index}.jpg"

    def index(self, member: str) -> tuple[int, int]:
        cls, name = member.split("/")[-2:]
        return self.classes.index(cls), int(name.split(".")[0])


def _shares(rng: np.random.Generator, total: int, n: int) -> list[int]:
    """`total` split evenly between n classes; which classes get one more is drawn."""
    counts = [total // n] * n
    if total % n and n == 2:  # the draw the two-class archive has always made, so that its bytes stay the same
        counts[1 - int(rng.integers(2))] += 1
    elif total % n:
        for label in rng.permutation(n)[: total % n]:
            counts[int(label)] += 1
    return counts


def plan(*, images_per_class: int, side_range, pathology_rate: float, seed: int, classes=CLASSES,
         top_folder: str | None = TOP_FOLDER, format: str = FORMAT) -> dict[str, str]:
    """Which members generate() will replace by odd files, without drawing anything.

    About pathology_rate of all images, split evenly between the classes, each kind equally often, so
    every kind appears once there are at least as many odd files as kinds.
    """
    check_synthetic(images_per_class, side_range, pathology_rate, seed, classes=classes, format=format,
                    top_folder=top_folder)
    layout, n = Layout(classes, top_folder), len(classes)
    rng = np.random.default_rng([seed, 0])
    total = synthetic_count(pathology_rate, images_per_class, n)
    kinds = list(PATHOLOGIES)
    kinds = [kinds[k] for k in rng.permutation([i % len(kinds) for i in range(total)])]
    members = []
    for label, count in enumerate(_shares(rng, total, n)):
        members += [layout.member(label, int(i)) for i in sorted(rng.choice(images_per_class, count, replace=False))]
    return dict(zip(members, kinds))


# The faults a data review should find, and what each is.
FAULTS = {
    "flipped": "a figure of another class, filed under this class",
    "non_pet": "background and clutter, no figure",
    "duplicate": "a copy of another image of its class: cropped up to 3% per side, resized by 0.8-1.2, re-encoded",
}


def faults(*, images_per_class: int, side_range, pathology_rate: float, seed: int, flipped_rate: float = 0.0,
           non_pet_rate: float = 0.0, duplicate_rate: float = 0.0, classes=CLASSES,
           top_folder: str | None = TOP_FOLDER, format: str = FORMAT) -> dict[str, tuple[str, str | None]]:
    """{member: (fault kind, the original member for a duplicate, else None)}, without drawing anything.

    Faults go to members that plan() leaves good, each to its own, and a duplicate's original is a good
    image of the same class with no fault either; their share is of all images, classes mixed.
    """
    layout_args = dict(classes=classes, format=format, top_folder=top_folder)
    check_synthetic(images_per_class, side_range, pathology_rate, seed, flipped_rate, non_pet_rate, duplicate_rate,
                    **layout_args)
    layout, n = Layout(classes, top_folder), len(classes)
    counts = [synthetic_count(rate, images_per_class, n) for rate in (flipped_rate, non_pet_rate, duplicate_rate)]
    if not any(counts):
        return {}
    odd = plan(images_per_class=images_per_class, side_range=side_range, pathology_rate=pathology_rate, seed=seed,
               **layout_args)
    good = [layout.member(label, i) for label in range(n) for i in range(images_per_class)]
    good = [good[i] for i in np.random.default_rng([seed, 2]).permutation(len(good)) if good[i] not in odd]
    found: dict[str, tuple[str, str | None]] = {}
    start = 0
    for kind, count in zip(FAULTS, counts):
        for member in good[start : start + count]:
            found[member] = (kind, None)
        start += count
    originals = good[start:]  # in random order already
    for copy in [m for m, (kind, _) in found.items() if kind == "duplicate"]:
        folder = copy.rsplit("/", 1)[0] + "/"
        original = next((m for m in originals if m.startswith(folder)), None)
        if original is None:  # its class has no good image left: the first two of the first class with two make
            del found[copy]   # the pair (params.check_synthetic's bound leaves one)
            originals.append(copy)
            left = Counter(m.rsplit("/", 1)[0] for m in originals)
            first = next(m for m in originals if left[m.rsplit("/", 1)[0]] >= 2)
            copy, original = [m for m in originals if m.startswith(first.rsplit("/", 1)[0] + "/")][:2]
            originals.remove(copy)
        originals.remove(original)
        found[copy] = ("duplicate", original)
    return found


# ---------------------------------------------------------------------------------------------------------
# Drawing
#
# Only element-wise arithmetic and Python's math on coordinates (no BLAS, no SIMD trigonometry), so that
# every machine rounds the polygons' vertices alike and writes the same bytes.


def _place(points: np.ndarray, angle: float, scale: float, cx: float, cy: float) -> np.ndarray:
    """Rotate by `angle` (radians, y down), scale, then move the origin to (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    x, y = points[:, 0], points[:, 1]
    return np.stack([cx + scale * (c * x - s * y), cy + scale * (s * x + c * y)], axis=1)


def _ellipse(cx, cy, rx, ry, angle=0.0, points=24):
    turns = [2 * math.pi * i / points for i in range(points)]
    unit = np.array([(rx * math.cos(t), ry * math.sin(t)) for t in turns])
    return _place(unit, angle, 1.0, cx, cy)


def _figure(rng: np.random.Generator, label: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The figure of class `label` in head units (head centred on 0, y down): (filled polygons, holes punched
    for eyes).

    Every random number is drawn for every class in the same order, so the classes share all the
    parameters; only how the head and ears are built from them differs (EARS, HEADS).
    """
    aspect = rng.uniform(0.88, 1.12)
    rx, ry = aspect, 1 / aspect
    ears = rng.uniform(0.85, 1.3) * rng.uniform(0.9, 1.1, size=2)  # overall and per-ear size
    splay = rng.uniform(-0.15, 0.15, size=2)  # how far each ear leans out
    eye_y, eye_r = rng.uniform(-0.15, 0.05), rng.uniform(0.09, 0.14)

    ear = label % len(EARS)
    polygons = [_ellipse(0, 0, rx, ry, points=_HEAD_POINTS[label // len(EARS)])]
    for side, size, lean in zip((-1, 1), ears, splay):
        if ear == 0:  # pointed ear standing on top of the head
            base = [(side * rx * math.sin(t), -ry * math.cos(t)) for t in (0.12 * math.pi, 0.38 * math.pi)]
            apex = (side * rx * (0.72 + lean), -ry - 0.9 * size)
            polygons.append(np.array([base[0], apex, base[1]]))
        elif ear == 1:  # rounded ear hanging at the side of the head
            length = 0.6 * size
            cx, cy = side * (rx + 0.05 + 0.2 * lean), -0.35 * ry + length
            polygons.append(_ellipse(cx, cy, DOG_EAR_WIDTH, length, angle=-side * (0.25 + lean)))
        elif ear == 2:  # round ear on top of the head
            polygons.append(_ellipse(side * rx * (0.75 + lean), -ry * 0.8, 0.45 * size, 0.45 * size, points=16))
    holes = [_ellipse(side * 0.4 * rx, eye_y, eye_r, eye_r, points=12) for side in (-1, 1)]
    return polygons, holes


def _luma(colour) -> float:
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def _contrasting(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A colour that stands out from `colour` in hue and in brightness, as a figure does in a photo."""
    while True:
        other = rng.uniform(0, 255, size=3)
        if math.dist(other, colour) >= 100 and abs(_luma(other) - _luma(colour)) >= 40:
            return other


def _render(rng: np.random.Generator, label: int, low: int, high: int, figure: bool = True) -> Image.Image:
    """One class image, drawn from `rng` alone; without `figure`, only its background and clutter."""
    width, height = (int(v) for v in rng.integers(low, high + 1, size=2))
    side = min(width, height)

    # Background: a flat colour with a brightness gradient in a random direction.
    bg = rng.uniform(0, 255, size=3)
    fg = _contrasting(rng, bg)
    angle, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(0, 50)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (x - width / 2) * math.cos(angle) + (y - height / 2) * math.sin(angle)
    ramp *= amplitude / (np.abs(ramp).max() + 1e-6)
    canvas = np.clip(bg + ramp[..., None], 0, 255).astype(np.uint8)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)

    # Clutter behind the figure, in the figure's colour or another one: ellipses, diamonds, triangles, lines.
    for _ in range(rng.integers(0, 5)):
        shape = rng.integers(4)
        colour = fg if rng.random() < 0.35 else rng.uniform(0, 255, size=3)
        colour = tuple(int(c) for c in colour)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = side * rng.uniform(0.04, 0.13)
        turn = rng.uniform(0, 2 * np.pi)
        if shape == 0:
            polygon = _ellipse(cx, cy, r, r * rng.uniform(0.4, 1), angle=turn, points=16)
        elif shape == 1:
            polygon = _ellipse(cx, cy, r, r * rng.uniform(0.3, 1), angle=turn, points=4)
        elif shape == 2:
            polygon = _ellipse(cx, cy, r, r * rng.uniform(0.5, 1), angle=turn, points=3)
        else:
            dx, dy = 2.5 * r * math.cos(turn), 2.5 * r * math.sin(turn)
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=colour, width=int(rng.integers(1, 4)))
            continue
        draw.polygon([tuple(p) for p in polygon], fill=colour)

    # The figure: head units -> pixels through a random scale, rotation and position.
    polygons, holes = _figure(rng, label)
    scale = side * rng.uniform(0.18, 0.26)
    turn = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    cx = rng.uniform(1.6 * scale, width - 1.6 * scale)
    cy = rng.uniform(1.6 * scale, height - 1.6 * scale)
    for polygon, colour in [(p, fg) for p in polygons] + [(h, bg) for h in holes] if figure else []:
        points = _place(polygon, turn, scale, cx, cy)
        draw.polygon([tuple(p) for p in points], fill=tuple(int(c) for c in colour))

    # Sensor noise, then JPEG at a random quality (the encoder's own artefacts come with it).
    sigma = rng.uniform(2, 10)
    noisy = np.asarray(image, dtype=np.float32) + sigma * rng.standard_normal((height, width, 3), np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _jpeg(rng: np.random.Generator, image: Image.Image) -> bytes:
    """A baseline JPEG with Pillow's default JFIF APP0 header, what the tutorial's check looks for."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(60, 96)))
    return buffer.getvalue()


def _segments(jpeg: bytes):
    """(marker, offset, end) of each header segment up to and including the start of scan."""
    offset = 2
    while True:
        marker = jpeg[offset + 1]
        (length,) = struct.unpack(">H", jpeg[offset + 2 : offset + 4])
        yield marker, offset, offset + 2 + length
        if marker == 0xDA:
            return
        offset += 2 + length


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


# A minimal little-endian TIFF with one IFD entry (Orientation = 1), as cameras write it.
_EXIF = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<IHHHIHHI", 8, 1, 0x0112, 3, 1, 1, 0, 0)

_ERROR_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    "<body><h1>Not Found</h1><p>The requested image was not found on this server.</p>\n"
    "<p>Request id: {}</p></body></html>\n"
)


def _odd_file(kind: str, rng: np.random.Generator, image: Image.Image) -> bytes:
    """The bytes of one odd file; all but zero_byte and not_an_image carry the class image."""
    if kind == "zero_byte":
        return b""
    if kind == "not_an_image":
        return _ERROR_PAGE.format(rng.bytes(16).hex()).encode()  # hex digits never spell JFIF
    if kind == "png_as_jpg":
        return _encode(image, "PNG")
    if kind == "gif_as_jpg":
        return _encode(image, "GIF")
    if kind == "bmp_as_jpg":
        return _encode(image, "BMP")
    jpeg = _jpeg(rng, image)
    segments = list(_segments(jpeg))
    if kind == "exif_jpeg":
        _, _, app0_end = segments[0]  # Pillow writes APP0 JFIF first; swap it for APP1 Exif
        return b"\xff\xd8\xff\xe1" + struct.pack(">H", len(_EXIF) + 2) + _EXIF + jpeg[app0_end:]
    if kind == "truncated_jpeg":
        _, _, scan = segments[-1]  # cut inside the image data, so the headers still open
        return jpeg[: scan + int((len(jpeg) - scan) * rng.uniform(0.3, 0.7))]
    if kind == "corrupt_jfif":
        (offset,) = [start for marker, start, _ in segments if marker == 0xC0]
        frame = bytearray(jpeg)
        for component in range(frame[offset + 9]):
            frame[offset + 12 + 3 * component] = 3  # quantisation table 3 is never defined
        return bytes(frame)
    raise ValueError(f"unknown pathology {kind!r}")


def _class_file(rng: np.random.Generator, label: int, low: int, high: int, kind: str | None) -> bytes:
    image = _render(rng, label, low, high)
    if kind is None:
        return _jpeg(rng, image)
    data = _odd_file(kind, rng, image)
    # A file meant to fail the jfif check must not spell JFIF anywhere by chance (whatever the window).
    while PATHOLOGIES[kind]["decode"] is None and b"JFIF" in data:
        data = _odd_file(kind, rng, _render(rng, label, low, high))
    return data


def _faulty_file(rng: np.random.Generator, label: int, low: int, high: int, kind: str, original: bytes | None,
                 min_side: int, num_classes: int = 2) -> bytes:
    """A good JPEG with one of FAULTS; `original` is the bytes a duplicate copies."""
    if kind == "flipped":  # another class's figure: the other one of two, else drawn
        other = label + 1 + (int(rng.integers(num_classes - 1)) if num_classes > 2 else 0)
        return _jpeg(rng, _render(rng, other % num_classes, low, high))
    if kind == "non_pet":
        return _jpeg(rng, _render(rng, label, low, high, figure=False))
    if kind == "duplicate":
        with Image.open(io.BytesIO(original)) as image:
            image = image.convert("RGB")
        width, height = image.size
        left, top, right, bottom = (int(rng.uniform(0, 0.03) * side) for side in (width, height, width, height))
        image = image.crop((left, top, width - right, height - bottom))
        factor = rng.uniform(0.8, 1.2)
        size = tuple(max(min_side, int(round(side * factor))) for side in image.size)
        return _jpeg(rng, image.resize(size, Image.BILINEAR))
    raise ValueError(f"unknown fault {kind!r}")


# ---------------------------------------------------------------------------------------------------------
# The other files of the real archive


def _thumbs_db(label: int, classes=CLASSES) -> bytes:
    """Windows' thumbnail cache: an OLE2 compound-file header, padded; not an image."""
    header = bytes.fromhex("d0cf11e0a1b11ae1") + bytes(16) + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
    return (header + classes[label].encode()).ljust(4096, b"\x00")


def _licence_pdf() -> bytes:
    """A one-page PDF that says it stands in for the licence the real archive ships."""
    lines = [
        "Placeholder for CDLA-Permissive-2.0.pdf",
        "This archive was generated offline by catsdogs.data.synthetic; it contains no real photographs.",
        "The real Kaggle Cats vs Dogs archive ships the Community Data License Agreement -",
        "Permissive, Version 2.0 here: https://cdla.dev/permissive-2-0/",
    ]
    text = "BT /F1 11 Tf 72 720 Td 14 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(text)} >>\nstream\n{text}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    pdf = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(pdf)
    pdf += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    pdf += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    pdf += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return pdf


def _about(layout: Layout) -> str:
    """The readme's description; the real archive's layout keeps the words it has always had."""
    if layout.classes == CLASSES:
        return (
            "Synthetic stand-in for the Kaggle Cats vs Dogs archive (kagglecatsanddogs_5340.zip).\r\n"
            "\r\n"
            "Generated offline by catsdogs.data.synthetic, so the pipeline runs without network. Cat images show a\r\n"
            "figure with pointed ears on top of its head, Dog images the same figure with rounded ears hanging\r\n"
            "at the sides; everything else is drawn alike for both classes. Some files are broken on purpose,\r\n"
            "like the odd files of the real archive.\r\n"
        )
    figures = "".join(f"{layout.folder(label)}/: {figure(label)}\r\n" for label in range(len(layout.classes)))
    return (
        f"Synthetic image archive of {len(layout.classes)} classes, generated offline by catsdogs.data.synthetic,\r\n"
        "so the pipeline runs without network. Each class shows its own figure; everything else is drawn\r\n"
        "alike for every class. Some files are broken on purpose, like the odd files of a real archive.\r\n"
        "\r\n"
        f"{figures}"
    )


def _readme(images_per_class, low, high, pathology_rate, seed, rates=None, layout: Layout | None = None,
            format: str = FORMAT) -> bytes:
    layout = layout or Layout()
    faults = "".join(f"{name}: {rate}\r\n" for name, rate in (rates or {}).items() if rate)
    given = {"classes": f"[{', '.join(layout.classes)}]" if layout.classes != CLASSES else None,
             "format": format if format != FORMAT else None,
             "top_folder": (layout.top_folder or "null") if layout.top_folder != TOP_FOLDER else None}
    faults += "".join(f"{name}: {value}\r\n" for name, value in given.items() if value)
    return (
        _about(layout)
        + "\r\n"
        f"images_per_class: {images_per_class}\r\n"
        f"side_range: [{low}, {high}]\r\n"
        f"pathology_rate: {pathology_rate}\r\n"
        f"seed: {seed}\r\n"
        f"{faults}"
    ).encode()


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.create_system = 3  # Unix, whatever system writes it
    info.external_attr = 0o100644 << 16
    # JPEG data does not compress; storing it is several times faster.
    info.compress_type = zipfile.ZIP_STORED if name.endswith(".jpg") else zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _write_tar(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""  # no owner or machine metadata
    archive.addfile(info, io.BytesIO(data))


@contextlib.contextmanager
def _container(path: Path, format: str):
    """A writer of members, `write(name, data)`, into a zip or a gzip tar whose bytes depend on the members
    alone: fixed times, no owner, no file name in the gzip header."""
    if format == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            yield lambda name, data: _write(archive, name, data)
        return
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                compresslevel=6) as packed:
        with tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as archive:
            yield lambda name, data: _write_tar(archive, name, data)


def generate(
    dest: str | Path,
    *,
    images_per_class: int,
    side_range,
    pathology_rate: float,
    seed: int,
    flipped_rate: float = 0.0,
    non_pet_rate: float = 0.0,
    duplicate_rate: float = 0.0,
    classes=CLASSES,
    format: str = FORMAT,
    top_folder: str | None = TOP_FOLDER,
    progress: bool = True,
) -> dict[str, str]:
    """Write the archive to `dest`: a `format` (zip or tar.gz) of `[top_folder/]<class>/<index>.jpg` for each of
    `classes`; return {member name: pathology kind} for every odd file mixed in (`faults()` with the same
    arguments says which images have which fault). The defaults give the real archive's layout.

    The archive appears at `dest` only once it is complete.
    """
    rates = {"flipped_rate": flipped_rate, "non_pet_rate": non_pet_rate, "duplicate_rate": duplicate_rate}
    layout_args = dict(classes=classes, format=format, top_folder=top_folder)
    low, high = check_synthetic(images_per_class, side_range, pathology_rate, seed, *rates.values(), **layout_args)
    layout, n = Layout(classes, top_folder), len(classes)
    odd = plan(images_per_class=images_per_class, side_range=side_range, pathology_rate=pathology_rate,
               seed=seed, **layout_args)
    faulty = faults(images_per_class=images_per_class, side_range=side_range, pathology_rate=pathology_rate,
                    seed=seed, **rates, **layout_args)

    def good_file(label: int, index: int) -> bytes:
        return _class_file(np.random.default_rng([seed, 1, label, index]), label, low, high, None)

    with atomic_path(dest) as tmp, _container(tmp, format) as write:
        write("CDLA-Permissive-2.0.pdf", _licence_pdf())
        with tqdm(total=n * images_per_class, desc="synthetic images", unit="img", disable=not progress) as bar:
            for label in range(n):
                for index in range(images_per_class):
                    name = layout.member(label, index)
                    rng = np.random.default_rng([seed, 1, label, index])
                    if name in faulty:
                        kind, original = faulty[name]
                        copied = good_file(*layout.index(original)) if original else None
                        data = _faulty_file(rng, label, low, high, kind, copied, SYNTHETIC_MIN_SIDE, n)
                    else:
                        data = _class_file(rng, label, low, high, odd.get(name))
                    write(name, data)
                    bar.update()
                write(f"{layout.folder(label)}/Thumbs.db", _thumbs_db(label, layout.classes))
        write("readme[1].txt", _readme(images_per_class, low, high, pathology_rate, seed, rates, layout, format))
    return odd
