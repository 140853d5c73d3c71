"""Preprocessing cache: per sample, the image resized to ``image_size``² and its packed masks.

``image_size`` is the run's working resolution (``data.cache_size``, else ``data.image_size``). A labelled
entry also stores its foreground map (the OR of the packed masks) so that a training crop
(``data.crop_size``, data/crops.py) is placed from a memory-mapped entry reading only the crop's rows.

Decoding a 2048² PNG and filling 29 polygons costs tens of milliseconds; loading one cached
``.npy`` (a single structured record: original size, uint8 image, bit-packed masks) costs well
under one. One ``.npy`` per sample was measured fastest to load: ~0.1 ms vs ~1.6 ms for an
uncompressed ``.npz`` (zip overhead) and ~3 ms for a compressed one (which is ~4x smaller).

Layout: ``cache_dir/<image_size>/<key>.npy``. The key hashes the image's and the JSON's path,
``mtime_ns`` and size, the image size and the catalogue names, so editing an annotation, replacing
an image or changing the resolution or class list silently misses the old entry instead of serving it.

Failures: a cache directory that cannot be written (read-only data root, full disk) is
:class:`CacheDirError`, naming the directory and suggesting ``data.cache_dir=<a writable path>``.
A damaged entry (truncated ``.npy``) is :class:`CacheCorruptError` from ``load_cached``;
``load_or_build`` rebuilds it from the source files with a warning, and raises only when the source
cannot be read either (the message says which file to delete to rebuild).
"""
from __future__ import annotations

import errno
import hashlib
import logging
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

from mmseg_text.data.annotations import AnnotationError, load_annotation
from mmseg_text.data.crops import crop_packed, foreground_map
from mmseg_text.data.images import ImageReadError, read_image, resize_to_model
from mmseg_text.data.layout import ImageRecord
from mmseg_text.data.masks import pack_masks, polygons_to_masks, unpack_masks
from mmseg_text.io import WRITE_ERRNOS, DiskWriteError, atomic_path

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the stored content changes meaning (2: + foreground map)
SAMPLE_ERRORS = (ImageReadError, AnnotationError, ValueError, OSError)
# what np.load / the record fields raise for a truncated or overwritten entry
_DAMAGE_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, TypeError)


class CacheDirError(DiskWriteError):
    """The preprocessing cache directory cannot be written; the message names it and the fix."""


class CacheCorruptError(ValueError):
    """A cache entry is truncated or corrupt; the message names the file and how to rebuild it."""


def cache_dir_error(directory: str | Path, err: OSError) -> CacheDirError:
    reason = WRITE_ERRNOS.get(err.errno or 0, err.strerror or str(err))
    return CacheDirError(err.errno or errno.EIO,
                         f"preprocessing cache directory {directory} cannot be written ({reason}); set "
                         "data.cache_dir=<a writable path> (or data.cache=false to read the images every time)")


def check_writable(directory: str | Path) -> None:
    """Create ``directory`` and a file in it, or raise :class:`CacheDirError` naming it."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise cache_dir_error(directory, err) from None


@dataclass(frozen=True)
class CachedSample:
    image: np.ndarray  # uint8 (S, S)
    masks: Optional[np.ndarray]  # bool (K, S, S); None for an unlabelled image
    orig_size: tuple[int, int]  # (H0, W0) of the source image


@dataclass
class CacheReport:
    paths: list[Optional[Path]]  # per record: its cache file, None when it failed
    built: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source file, reason)
    seconds: float = 0.0

    @property
    def disk_bytes(self) -> int:
        """Size on disk of this report's entries (the cache cost of a resolution)."""
        return sum(p.stat().st_size for p in self.paths if p is not None and p.exists())


def stat_key(path: Optional[str | Path]) -> str:
    """``path|mtime_ns|size``: changes whenever the file is rewritten, touched or replaced."""
    if path is None:
        return "none"
    st = os.stat(path)
    return f"{Path(path).resolve()}|{st.st_mtime_ns}|{st.st_size}"


def cache_key(record: ImageRecord, image_size: int, class_names: Sequence[str]) -> str:
    """Hash of everything the cached content depends on (sources' identity, size, classes)."""
    parts = [f"v{CACHE_FORMAT}", stat_key(record.image_path), stat_key(record.json_path),
             str(int(image_size)), "\x1f".join(class_names)]
    return hashlib.sha1("\x1e".join(parts).encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | Path, record: ImageRecord, image_size: int, class_names: Sequence[str]) -> Path:
    return Path(cache_dir) / str(int(image_size)) / f"{cache_key(record, image_size, class_names)}.npy"


def preprocess_sample(record: ImageRecord, image_size: int, class_names: Sequence[str]) -> CachedSample:
    """Read and resize one sample (INTER_AREA image, polygons filled at the target size).

    Raises ImageReadError / AnnotationError naming the file. Points slightly outside the image are
    clipped by the fill (``check_dataset`` reports them).
    """
    image = read_image(record.image_path)
    orig_size = (int(image.shape[0]), int(image.shape[1]))
    size = (int(image_size), int(image_size))
    image = resize_to_model(image, image_size)
    masks = None
    if record.json_path is not None:
        polygons = load_annotation(record.json_path, known_labels=class_names)
        masks = polygons_to_masks(polygons, class_names, out_size=size, src_size=orig_size)
    return CachedSample(image, masks, orig_size)


def _record_dtype(image_size: int, num_classes: int, labelled: bool) -> np.dtype:
    fields = [("orig_size", "<i4", (2,)), ("image", "u1", (image_size, image_size))]
    if labelled:
        fields.append(("masks", "u1", (num_classes, image_size, (image_size + 7) // 8)))
        fields.append(("foreground", "u1", (image_size, (image_size + 7) // 8)))
    return np.dtype(fields)


def write_cached(path: str | Path, sample: CachedSample) -> None:
    size = sample.image.shape[0]
    num_classes = 0 if sample.masks is None else sample.masks.shape[0]
    record = np.zeros(1, dtype=_record_dtype(size, num_classes, sample.masks is not None))
    record["orig_size"][0] = sample.orig_size
    record["image"][0] = sample.image
    if sample.masks is not None:
        packed = pack_masks(sample.masks)
        record["masks"][0] = packed
        record["foreground"][0] = foreground_map(packed)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, record, allow_pickle=False)


def load_cached(path: str | Path) -> CachedSample:
    """The entry at ``path``; FileNotFoundError when missing, :class:`CacheCorruptError` when damaged."""
    try:
        record = np.load(path, allow_pickle=False)[0]
        image = record["image"]
        masks = None
        if "masks" in record.dtype.names:
            masks = unpack_masks(record["masks"], image.shape[1])
        h0, w0 = record["orig_size"]
    except FileNotFoundError:
        raise
    except _DAMAGE_ERRORS as err:
        raise _damaged(path, err) from None
    return CachedSample(image, masks, (int(h0), int(w0)))


def _damaged(path: str | Path, err: Exception) -> CacheCorruptError:
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return CacheCorruptError(f"{path}: damaged preprocessing cache file ({type(err).__name__}: {detail}); delete "
                             f"it (or the whole cache directory {Path(path).parent.parent}) to rebuild it")


Origin = Callable[[Optional[np.ndarray]], tuple[int, int]]  # packed foreground map (or None) -> (y0, x0)


def crop_sample(sample: CachedSample, crop: int, choose: Origin) -> tuple[CachedSample, tuple[int, int]]:
    """The ``crop``² window of an in-memory sample at ``choose(foreground)``, and that origin."""
    packed = None if sample.masks is None else pack_masks(sample.masks)
    origin = choose(None if packed is None else foreground_map(packed))
    image, masks = crop_packed(sample.image, packed, *origin, crop)
    return CachedSample(image, masks, sample.orig_size), origin


def load_window(path: Path, record: ImageRecord, image_size: int, class_names: Sequence[str], crop: int,
                choose: Origin) -> tuple[CachedSample, tuple[int, int]]:
    """A ``crop``² window of the cached sample, reading only its rows of the memory-mapped entry.

    ``choose`` places the window from the entry's foreground map. A missing or damaged entry is rebuilt
    as in :func:`load_or_build` and cropped in memory (the same origin for the same draws).
    """
    try:
        entry = np.load(path, mmap_mode="r", allow_pickle=False)
        labelled = "masks" in entry.dtype.names
        foreground = np.array(entry["foreground"][0]) if labelled else None
        h0, w0 = entry["orig_size"][0]
    except _DAMAGE_ERRORS:  # missing (OSError) or damaged: load_or_build rebuilds it, with a warning if damaged
        return crop_sample(load_or_build(path, record, image_size, class_names), crop, choose)
    origin = choose(foreground)
    image, masks = crop_packed(entry["image"][0], entry["masks"][0] if labelled else None, *origin, crop)
    return CachedSample(image, masks, (int(h0), int(w0))), origin


def _store(path: Path, sample: CachedSample) -> None:
    """Write an entry the dataset needed at load time; a cache that cannot be written only warns."""
    try:
        write_cached(path, sample)
    except OSError as err:
        logger.warning("%s", cache_dir_error(path.parent, err))


def load_or_build(path: Path, record: ImageRecord, image_size: int, class_names: Sequence[str]) -> CachedSample:
    """The cached sample; computed and stored first when the entry is missing (e.g. deleted).

    A damaged entry is rebuilt from the source files with a warning naming it; when the source cannot
    be read either, :class:`CacheCorruptError` names the cache file and the source's error.
    """
    try:
        return load_cached(path)
    except FileNotFoundError:
        sample = preprocess_sample(record, image_size, class_names)
    except CacheCorruptError as err:
        try:
            sample = preprocess_sample(record, image_size, class_names)
        except SAMPLE_ERRORS as source_err:
            raise CacheCorruptError(f"{err}; it cannot be rebuilt now: {type(source_err).__name__}: {source_err}"
                                    ) from None
        logger.warning("%s -- rebuilt it from %s", err, record.image_path)
    _store(path, sample)
    return sample


def _build_one(record: ImageRecord, path: Path, image_size: int, class_names: Sequence[str]) -> Optional[str]:
    """Write one entry; returns the reason (naming the file) when the sample cannot be read.

    A failed write is not the sample's fault: it raises :class:`CacheDirError` naming the directory.
    """
    try:
        sample = preprocess_sample(record, image_size, class_names)
    except SAMPLE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    try:
        write_cached(path, sample)
    except OSError as err:
        raise cache_dir_error(path.parent, err) from None
    return None


@contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Worker processes forked while OpenCV is single-threaded in this process.

    A fork copies OpenCV's thread pool in whatever state it is: a child forked after the parent
    ran CLAHE blocks forever if it then calls ``cv2.setNumThreads`` (seen in the tests). Setting one
    thread here first leaves the children a pool without worker threads (and one core each); it is
    restored afterwards. Fork, not forkserver/spawn: those re-import ``__main__`` in every worker,
    which for a training script means importing torch (~3 s).
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
            yield pool
    finally:
        cv2.setNumThreads(previous)


def build_cache(records: Sequence[ImageRecord], *, cache_dir: str | Path, image_size: int,
                class_names: Sequence[str], workers: int = 2, progress: bool = True) -> CacheReport:
    """Compute the missing cache entries of ``records`` (``workers`` processes; 0/1 = in-process).

    Entries already present are reused. Samples that cannot be read are listed in
    ``report.failed`` with the file and the reason; their ``report.paths`` entry is None. A cache
    directory that cannot be written raises :class:`CacheDirError` (naming it, suggesting data.cache_dir).
    """
    start = time.perf_counter()
    class_names = tuple(class_names)
    failures: dict[int, str] = {}
    paths: list[Optional[Path]] = []
    for i, record in enumerate(records):
        try:
            paths.append(cache_path(cache_dir, record, image_size, class_names))
        except OSError as err:  # a source file vanished after the listing
            paths.append(None)
            failures[i] = f"{type(err).__name__}: {err}"
    todo = [i for i, p in enumerate(paths) if p is not None and not p.exists()]
    if todo:  # a read-only data root (the default cache_dir is ROOT/.cache) fails here, once, naming it
        check_writable(Path(cache_dir) / str(int(image_size)))
    report = CacheReport(paths=paths, reused=len(records) - len(todo) - len(failures))
    bar = tqdm(total=len(todo), desc=f"cache {image_size}px", disable=not progress or not todo, leave=False)
    if workers > 1 and len(todo) > 1:
        with process_pool(min(workers, len(todo))) as pool:
            futures = {pool.submit(_build_one, records[i], paths[i], image_size, class_names): i for i in todo}
            for future in as_completed(futures):
                try:
                    error = future.result()
                except CacheDirError:
                    pool.shutdown(wait=True, cancel_futures=True)  # the other entries would fail alike
                    raise
                if error is not None:
                    failures[futures[future]] = error
                bar.update()
    else:
        for i in todo:
            error = _build_one(records[i], paths[i], image_size, class_names)
            if error is not None:
                failures[i] = error
            bar.update()
    bar.close()
    for i in sorted(failures):
        report.paths[i] = None
        report.failed.append((str(records[i].image_path), failures[i]))  # the reason names the bad file
        logger.warning("cache: cannot preprocess %s: %s", records[i].image_path, failures[i])
    report.built = len(set(todo) - set(failures))
    report.seconds = time.perf_counter() - start
    if report.built:
        logger.info("cache %dpx: %d entries built in %.1f s, %d reused; %.1f MB on disk in %s", image_size,
                    report.built, report.seconds, report.reused, report.disk_bytes / 2**20, Path(cache_dir) / str(image_size))
    return report
