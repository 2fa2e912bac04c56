"""Where the images come from: a zip, a tar (plain, gzip, bzip2 or xz) or a folder of class folders.

The kind is read from the content, never from the name; a folder is packed into a deterministic zip first
(catsdogs.data.packing, by the download stage). Zip and tar members are listed through one interface, with
the zip's defences (catsdogs.data.archive) applied to tar member by member before anything is written.
Images are `<root>/<class>/<file>`; the root is found (`find_root`), not assumed.

A compressed tar has no random access, so its members are not read by the workers themselves, as a zip's
are (catsdogs.data.checker): one sequential read in the main process hands member bytes to the pool in
batches, a bounded number of batches in flight. Decompressing is several times faster than checking, so
the checking overlaps it at the pool's speed, with no temporary copy of the data on disk and bounded memory.
Before it, a first pass lists the headers: a user's mistake (one class, two roots, a listed member that
is not there) must stop the stage before any work starts, and a compressed stream can only be listed by
inflating it, so a compressed tar is inflated twice. benchmarks/filter_sources.py measures both.
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import tarfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from catsdogs.data import archive as zipped
from catsdogs.data import checker, images
from catsdogs.errors import UserError

FOLDER, ZIP, TAR = "folder", "zip", "tar"
# Tar kinds and tarfile's name for their compression ("" for a plain tar).
TARS = {"tar": "", "tar.gz": "gz", "tar.bz2": "bz2", "tar.xz": "xz"}
_MAGIC = {b"\x1f\x8b": "tar.gz", b"BZh": "tar.bz2", b"\xfd7zXZ\x00": "tar.xz"}
_WHAT = {"tar": "tar", "tar.gz": "gzip-compressed tar", "tar.bz2": "bzip2-compressed tar",
         "tar.xz": "xz-compressed tar", "zip": "zip"}

# The param that names the root when it cannot be found: the filter's, so that naming it re-runs the filter only.
ROOT_PARAM = "filter.root"
# Folders that hold no classes: hidden ones, and the resource forks macOS' Finder adds to the zips it makes.
_NOT_CLASSES = ("__MACOSX",)

HARDLINK = "hard link entry"
DEVICE = "device entry"
FIFO = "FIFO entry"

# Compressed tar members travel to the workers in batches of at most this many members or bytes, and at most
# _IN_FLIGHT batches per worker wait, so memory stays bounded whatever the archive's size.
_BATCH_MEMBERS = 64
_BATCH_BYTES = 16 << 20
_IN_FLIGHT = 2


class SourceError(UserError):
    pass


def kind(path: str | os.PathLike) -> str:
    """What `path` holds, from its content: FOLDER, ZIP or one of TARS."""
    path = Path(path)
    if path.is_dir():
        return FOLDER
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file or folder") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc})") from None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return ZIP
    for magic, found in _MAGIC.items():
        if head.startswith(magic):
            return found
    if _is_tar_header(head):
        return TAR
    if zipfile.is_zipfile(path):  # a zip with something before it (a self-extracting one)
        return ZIP
    raise SourceError(f"{path}: not a readable zip archive, nor a tar (plain, gzip, bzip2 or xz), nor a folder")


def _is_tar_header(block: bytes) -> bool:
    if len(block) == 512 and not block.strip(b"\0"):
        return True  # an empty tar: its end-of-archive block
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# One interface over zip and tar members


@dataclass(frozen=True)
class Entry:
    """A member that is a file, not a folder, in archive order."""

    name: str
    size: int  # bytes once inflated, as the archive declares
    unsafe: str | None  # why it must never be written, or None
    key: int  # which entry of that name: its position (zip) or header offset (tar)


class ZipSource:
    """A zip: random access, so the filter's workers read members themselves (catsdogs.data.checker)."""

    random_access = True

    def __init__(self, path, max_pixels: int):
        self.filename, self.kind = str(path), ZIP
        self._zip = zipped.open_zip(path)

    def entries(self) -> list[Entry]:
        return [Entry(info.filename, info.file_size, zipped.unsafe_entry(info), i)
                for i, info in enumerate(self._zip.infolist()) if not info.is_dir()]

    def close(self) -> None:
        self._zip.close()


class TarSource:
    """A tar, plain or compressed, read front to back: listed in one pass, its members' bytes in another."""

    random_access = False

    def __init__(self, path, kind: str, max_pixels: int):
        self.filename, self.kind = str(path), kind
        self._max_bytes = images.max_file_bytes(max_pixels)
        self._max_pixels = max_pixels
        self._last: dict[str, int] = {}

    def _open(self) -> tarfile.TarFile:
        try:
            tar = tarfile.open(self.filename, f"r:{TARS[self.kind]}")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise self._damaged(exc, None) from None
        tar.fileobj = _LastRead(tar.fileobj, empty=tar.firstmember is None, limit=self._max_bytes + tarfile.BLOCKSIZE)
        return tar

    def _damaged(self, exc: BaseException, after: str | None) -> SourceError:
        where = f" after member {after}" if after else ""
        return SourceError(f"{self.filename}: not a readable {_WHAT[self.kind]}{where} "
                           f"({type(exc).__name__}: {exc}); delete it and download again")

    def _members(self, tar: tarfile.TarFile):
        """The tar's headers one by one, then a check that it ends where a tar ends (a cut-off download
        of a plain tar would otherwise just look shorter)."""
        info = None
        try:
            for info in tar:
                yield info
        except (tarfile.TarError, OSError, EOFError) as exc:  # EOFError, zlib.error and LZMAError included
            raise self._damaged(exc, info and info.name) from None
        except _Oversized as exc:
            where = f"after member {info.name}" if info else "at the start"
            raise SourceError(f"{self.filename}: a header {where} declares {exc.args[0]:,} bytes of extended "
                              f"header, more than an image of {self._max_pixels:,} pixels (filter.max_pixels) "
                              "can take (a decompression bomb?)") from None
        end = tar.fileobj.last  # the block tarfile stopped at
        if len(end) < tarfile.BLOCKSIZE or end.strip(b"\0"):
            raise self._damaged(EOFError("a header that is neither a member's nor the end's: cut short?"),
                                info and info.name)

    def entries(self) -> list[Entry]:
        """Every header, refused or not. Headers only: no member's bytes are kept. A compressed member
        larger than an image can be stops the listing there: skipping it would mean inflating it."""
        found = []
        with self._open() as tar:
            for info in self._members(tar):
                if info.isdir():
                    continue
                if TARS[self.kind] and info.size > self._max_bytes:
                    raise SourceError(
                        f"{self.filename}: member {info.name} declares {info.size:,} bytes, more than an "
                        f"image of {self._max_pixels:,} pixels (filter.max_pixels) can take; a compressed tar "
                        "cannot skip it without inflating it (a decompression bomb?): remove it")
                found.append(Entry(info.name, info.size, _unsafe_tar(info), info.offset))
        self._last = {entry.name: entry.key for entry in found}
        return found

    def stream(self, wanted: dict[str, str]):
        """(name, class, size, bytes) for the members named in `wanted` ({name: class}), in archive order;
        of several entries of one name the last, as listed. A member larger than an image can be comes with
        None for its bytes: never read."""
        if not self._last:
            self.entries()
        with self._open() as tar:
            for info in self._members(tar):
                if info.name not in wanted or self._last.get(info.name) != info.offset:
                    continue
                data = None
                if info.size <= self._max_bytes:
                    try:
                        data = tar.extractfile(info).read()
                    except (tarfile.TarError, OSError, EOFError) as exc:
                        raise self._damaged(exc, info.name) from None
                yield info.name, wanted[info.name], info.size, data

    def close(self) -> None:
        pass


class _Oversized(Exception):
    pass


class _LastRead:
    """tarfile's file object, remembering the last read: tarfile ends a listing silently at a header it
    cannot parse (a cut-off download), while a complete tar always ends with a block of zeros. It also
    refuses any one read larger than `limit`: tarfile reads a pax or GNU long-name header whole into
    memory, whatever size it declares (a memory bomb a few kilobytes long once compressed)."""

    def __init__(self, fileobj, empty: bool, limit: int):
        self._fileobj, self._limit = fileobj, limit
        self.last = bytes(tarfile.BLOCKSIZE) if empty else b""  # an empty tar's end was read on opening

    def read(self, size=-1) -> bytes:
        if size is None or size < 0 or size > self._limit:
            raise _Oversized(size)
        self.last = self._fileobj.read(size)
        return self.last

    def __getattr__(self, name):
        return getattr(self._fileobj, name)


def _unsafe_tar(info: tarfile.TarInfo) -> str | None:
    if info.issym():
        return zipped.SYMLINK
    if info.islnk():
        return HARDLINK
    if info.ischr() or info.isblk():
        return DEVICE
    if info.isfifo():
        return FIFO
    if not info.isreg():
        return f"not a regular file (tar type {info.type!r})"
    return zipped.unsafe_name(info.name)


def open_source(path: str | os.PathLike, max_pixels: int = images.MAX_PIXELS) -> ZipSource | TarSource:
    """The archive at `path` (a packed folder is a zip). `max_pixels` bounds a member's size (images.py)."""
    if not Path(path).exists():
        raise SourceError(f"{path}: archive not found (run the download stage first)")
    found = kind(path)
    if found == FOLDER:
        raise SourceError(f"{path}: a folder; pack it first (catsdogs.data.packing; the download stage does)")
    return ZipSource(path, max_pixels) if found == ZIP else TarSource(path, found, max_pixels)


# ---------------------------------------------------------------------------------------------------------
# Class folders, found


def _hidden(part: str) -> bool:
    return part.startswith(".") or part in _NOT_CLASSES


def _describe(root: str) -> str:
    return f"{root}/<class>/" if root else "<class>/ at the top level"


def find_root(names: list[str], filename: str, root: str | None = None) -> str:
    """The folder whose subfolders are the classes ("" for the archive's top level), from the names of its
    files: `root` when given; else the archive's single top folder or, when it has several, its top level,
    if that holds two or more class folders of images; else the one folder anywhere that does. Two such
    folders are an error: which one is meant is the user's to say."""
    if root is not None:
        return root.strip("/")
    classes: dict[str, set[str]] = collections.defaultdict(set)
    tops, nested = set(), False
    for name in names:
        parts = PurePosixPath(name).parts
        if any(_hidden(part) for part in parts[:-1]):
            continue
        if len(parts) > 1:
            tops.add(parts[0])
        nested = nested or len(parts) > 2
        if len(parts) > 1 and images.is_image_name(parts[-1]):
            classes["/".join(parts[:-2])].add(parts[-2])
    preferred = next(iter(tops)) if len(tops) == 1 else ""
    candidates = sorted(folder for folder, found in classes.items() if len(found) >= 2)
    if not candidates and preferred and list(classes) == [""] and not nested:
        return ""  # a single top folder of images and no deeper one (`roses/1.jpg`): one class, for the error
    if preferred in candidates or not candidates:
        return preferred
    if len(candidates) > 1:
        listed = " and ".join(f"{c}/" if c else "the top level" for c in candidates[:2])
        more = f" (and {len(candidates) - 2} more)" if len(candidates) > 2 else ""
        raise SourceError(f"{filename}: two candidate roots, {listed}{more}, each holding class folders of "
                          f"images: set {ROOT_PARAM} to the one to use")
    return candidates[0]


def member_name(root: str, path: str) -> str:
    """The member a cleaned image came from: the filter writes member `<root>/<class>/<file>` to
    `<class>/<file>` of the cleaned folder, the path the split lists ("Cat/1.jpg" -> "PetImages/Cat/1.jpg")."""
    return f"{root}/{path}" if root else path


def list_members(source: ZipSource | TarSource, root: str | None = None) -> zipped.Members:
    """Sort members into class images and the rest (catsdogs.data.archive.Members), under the root found (or
    given): images are `<root>/<class>/<image>`, the rest is ignored with a reason. Fewer than two classes is
    an error."""
    entries = source.entries()
    last = {entry.name: entry.key for entry in entries}
    reasons = {}
    for entry in entries:
        reasons[entry] = entry.unsafe or (zipped.DUPLICATE if last[entry.name] != entry.key else None)
    root = find_root([e.name for e in entries if reasons[e] is None], source.filename, root)
    depth = len(PurePosixPath(root).parts) if root else 0
    members = zipped.Members(root=root)
    for entry in entries:
        reason = reasons[entry]
        parts = PurePosixPath(entry.name).parts
        if reason is None:
            if len(parts) != depth + 2 or "/".join(parts[:depth]) != root:
                reason = f"outside {_describe(root)}"
            elif _hidden(parts[depth]):
                reason = zipped.HIDDEN
            elif not images.is_image_name(parts[-1]):
                reason = zipped.NOT_AN_IMAGE
        if reason is None:
            members.images.append((entry.name, parts[depth]))
        else:
            members.ignored.append((entry.name, reason))
    if not members.images:
        raise SourceError(f"{source.filename}: no images in class folders {_describe(root)} "
                          f"(image files end in {', '.join(images.IMAGE_EXTENSIONS)}); "
                          f"set {ROOT_PARAM} if they are elsewhere")
    if len(members.classes) < 2:
        raise SourceError(f"{source.filename}: only one class folder, {members.classes[0]}, under "
                          f"{_describe(root)}: at least two classes are needed")
    return members


# ---------------------------------------------------------------------------------------------------------
# The filter's checking, for any source


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to report (checker.py)


def _check_batch(batch, out_dir: str, method: str, max_pixels: int):
    return [(name, cls, checker.check_member(name, cls, size, lambda data=data: data, out_dir, method, max_pixels))
            for name, cls, size, data in batch]


def _batches(stream):
    batch, held = [], 0
    for item in stream:
        batch.append(item)
        held += len(item[3] or b"")
        if len(batch) >= _BATCH_MEMBERS or held >= _BATCH_BYTES:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def check_source(source: ZipSource | TarSource, members: zipped.Members, out_dir: Path, method: str,
                 max_pixels: int, workers: int):
    """Check every class image, writing the kept ones into `out_dir`: (member, class, reason or None) each,
    as catsdogs.data.checker.check_archive returns them."""
    if source.random_access:
        return checker.check_archive(Path(source.filename), members, out_dir, method, max_pixels, workers)
    for cls in members.classes:
        (out_dir / cls).mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    check = functools.partial(_check_batch, out_dir=str(out_dir), method=method, max_pixels=max_pixels)
    results, pending = [], collections.deque()
    pool = ProcessPoolExecutor(workers, initializer=_init_worker)
    try:
        with tqdm(total=len(members.images), desc=f"filter ({method})", unit="img") as bar:
            for batch in _batches(source.stream(dict(members.images))):
                pending.append(pool.submit(check, batch))
                while len(pending) > _IN_FLIGHT * workers or (pending and pending[0].done()):
                    results.extend(pending.popleft().result())
                    bar.n = len(results)
                    bar.refresh()
            while pending:
                results.extend(pending.popleft().result())
                bar.n = len(results)
                bar.refresh()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return results
