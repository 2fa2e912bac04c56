"""An offline stand-in for the Kaggle Cats vs Dogs archive (kagglecatsanddogs_5340.zip).

The pipeline and its tests must run without network, so this writes a zip with the real archive's layout
(PetImages/Cat/0.jpg ..., a Thumbs.db per class, the licence PDF and readme[1].txt at the top) and with
the real archive's kinds of odd files mixed in, so that the filter has something to drop.

The two classes differ only in the outline of one figure: "Cat" has pointed ears on top of its head,
"Dog" has rounded ears hanging at the sides. Background, colours, figure area, position, scale, rotation,
clutter, noise and JPEG quality are drawn from the same distributions for both classes, so a model has to
learn the shape; no colour or brightness statistic gives the label away.

Everything comes from the seed: the same arguments give a byte-identical archive. Each image has its own
random stream, so an image looks the same whatever the other arguments (e.g. pathology_rate) are.

Besides the odd files, the archive can hold the faults a data review looks for (all off by default):
images filed under the wrong class, images with no figure ("no pet"), and near-duplicates (a copy of
another image of its class, re-encoded, resized and slightly cropped). `faults()` says which, like `plan()`.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from catsdogs.atomic import atomic_path
from catsdogs.params import SYNTHETIC_MIN_SIDE, check_synthetic, synthetic_count

CLASSES = ("Cat", "Dog")

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
MAX_ROTATION = math.radians(30)

# Half-width of a hanging ear in head units: it makes both figures cover the same area on average
# (tests/test_synthetic.py::test_figure_area_is_balanced measures it).
DOG_EAR_WIDTH = 0.25


def _member(label: int, index: int) -> str:
    return f"PetImages/{CLASSES[label]}/{index}.jpg"


def plan(*, images_per_class: int, side_range, pathology_rate: float, seed: int) -> dict[str, str]:
    """Which members generate() will replace by odd files, without drawing anything.

    About pathology_rate of all images, split evenly between the classes, each kind equally often, so
    every kind appears once there are at least as many odd files as kinds.
    """
    check_synthetic(images_per_class, side_range, pathology_rate, seed)
    rng = np.random.default_rng([seed, 0])
    total = synthetic_count(pathology_rate, images_per_class)
    kinds = list(PATHOLOGIES)
    kinds = [kinds[k] for k in rng.permutation([i % len(kinds) for i in range(total)])]
    num_cats = total // 2 + int(total % 2 and rng.integers(2))
    members = [_member(0, int(i)) for i in sorted(rng.choice(images_per_class, num_cats, replace=False))]
    members += [_member(1, int(i)) for i in sorted(rng.choice(images_per_class, total - num_cats, replace=False))]
    return dict(zip(members, kinds))


# The faults a data review should find, and what each is.
FAULTS = {
    "flipped": "a figure of the other class, filed under this class",
    "non_pet": "background and clutter, no figure",
    "duplicate": "a copy of another image of its class: cropped up to 3% per side, resized by 0.8-1.2, re-encoded",
}


def faults(*, images_per_class: int, side_range, pathology_rate: float, seed: int, flipped_rate: float = 0.0,
           non_pet_rate: float = 0.0, duplicate_rate: float = 0.0) -> dict[str, tuple[str, str | None]]:
    """{member: (fault kind, the original member for a duplicate, else None)}, without drawing anything.

    Faults go to members that plan() leaves good, each to its own, and a duplicate's original is a good
    image of the same class with no fault either; their share is of all images, classes mixed.
    """
    check_synthetic(images_per_class, side_range, pathology_rate, seed, flipped_rate, non_pet_rate, duplicate_rate)
    counts = [synthetic_count(rate, images_per_class) for rate in (flipped_rate, non_pet_rate, duplicate_rate)]
    if not any(counts):
        return {}
    odd = plan(images_per_class=images_per_class, side_range=side_range, pathology_rate=pathology_rate, seed=seed)
    good = [_member(label, i) for label in range(len(CLASSES)) for i in range(images_per_class)]
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
        if original is None:  # its class has no good image left: the first two of the other class's make the pair
            del found[copy]
            originals.append(copy)
            copy, original = [m for m in originals if not m.startswith(folder)][:2]
            originals.remove(copy)
        originals.remove(original)
        found[copy] = ("duplicate", original)
    return found


def _index(member: str) -> tuple[int, int]:
    _, cls, name = member.split("/")
    return CLASSES.index(cls), int(name.split(".")[0])


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
    """The figure in head units (head centred on 0, y down): (filled polygons, holes punched for eyes).

    Every random number is drawn for both classes in the same order, so the classes share all the
    parameters; only how the ears are built from them differs.
    """
    aspect = rng.uniform(0.88, 1.12)
    rx, ry = aspect, 1 / aspect
    ears = rng.uniform(0.85, 1.3) * rng.uniform(0.9, 1.1, size=2)  # overall and per-ear size
    splay = rng.uniform(-0.15, 0.15, size=2)  # how far each ear leans out
    eye_y, eye_r = rng.uniform(-0.15, 0.05), rng.uniform(0.09, 0.14)

    polygons = [_ellipse(0, 0, rx, ry)]
    for side, size, lean in zip((-1, 1), ears, splay):
        if label == 0:  # pointed ear standing on top of the head
            base = [(side * rx * math.sin(t), -ry * math.cos(t)) for t in (0.12 * math.pi, 0.38 * math.pi)]
            apex = (side * rx * (0.72 + lean), -ry - 0.9 * size)
            polygons.append(np.array([base[0], apex, base[1]]))
        else:  # rounded ear hanging at the side of the head
            length = 0.6 * size
            cx, cy = side * (rx + 0.05 + 0.2 * lean), -0.35 * ry + length
            polygons.append(_ellipse(cx, cy, DOG_EAR_WIDTH, length, angle=-side * (0.25 + lean)))
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
                 min_side: int) -> bytes:
    """A good JPEG with one of FAULTS; `original` is the bytes a duplicate copies."""
    if kind == "flipped":
        return _jpeg(rng, _render(rng, 1 - label, low, high))
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


def _thumbs_db(label: int) -> bytes:
    """Windows' thumbnail cache: an OLE2 compound-file header, padded; not an image."""
    header = bytes.fromhex("d0cf11e0a1b11ae1") + bytes(16) + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
    return (header + CLASSES[label].encode()).ljust(4096, b"\x00")


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


def _readme(images_per_class, low, high, pathology_rate, seed, rates=None) -> bytes:
    faults = "".join(f"{name}: {rate}\r\n" for name, rate in (rates or {}).items() if rate)
    return (
        "Synthetic stand-in for the Kaggle Cats vs Dogs archive (kagglecatsanddogs_5340.zip).\r\n"
        "\r\n"
        "Generated offline by catsdogs.data.synthetic, so the pipeline runs without network. Cat images show a\r\n"
        "figure with pointed ears on top of its head, Dog images the same figure with rounded ears hanging\r\n"
        "at the sides; everything else is drawn alike for both classes. Some files are broken on purpose,\r\n"
        "like the odd files of the real archive.\r\n"
        "\r\n"
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
    progress: bool = True,
) -> dict[str, str]:
    """Write the archive to `dest`; return {member name: pathology kind} for every odd file mixed in
    (`faults()` with the same arguments says which images have which fault).

    The archive appears at `dest` only once it is complete.
    """
    rates = {"flipped_rate": flipped_rate, "non_pet_rate": non_pet_rate, "duplicate_rate": duplicate_rate}
    low, high = check_synthetic(images_per_class, side_range, pathology_rate, seed, *rates.values())
    odd = plan(images_per_class=images_per_class, side_range=side_range, pathology_rate=pathology_rate,
               seed=seed)
    faulty = faults(images_per_class=images_per_class, side_range=side_range, pathology_rate=pathology_rate,
                    seed=seed, **rates)

    def good_file(label: int, index: int) -> bytes:
        return _class_file(np.random.default_rng([seed, 1, label, index]), label, low, high, None)

    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        _write(archive, "CDLA-Permissive-2.0.pdf", _licence_pdf())
        with tqdm(total=2 * images_per_class, desc="synthetic images", unit="img", disable=not progress) as bar:
            for label in range(len(CLASSES)):
                for index in range(images_per_class):
                    name = _member(label, index)
                    rng = np.random.default_rng([seed, 1, label, index])
                    if name in faulty:
                        kind, original = faulty[name]
                        copied = good_file(*_index(original)) if original else None
                        data = _faulty_file(rng, label, low, high, kind, copied, SYNTHETIC_MIN_SIDE)
                    else:
                        data = _class_file(rng, label, low, high, odd.get(name))
                    _write(archive, name, data)
                    bar.update()
                _write(archive, f"PetImages/{CLASSES[label]}/Thumbs.db", _thumbs_db(label))
        _write(archive, "readme[1].txt", _readme(images_per_class, low, high, pathology_rate, seed, rates))
    return odd
