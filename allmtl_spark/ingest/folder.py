"""A plain folder of slide photos as an ingest source (``kind: folder``).

Every image file under the folder (recursively; ``.jpg``, ``.jpeg``, ``.png``, ``.tif``, ``.tiff``,
any case) is one slide. Its ``slide_id`` is its path inside the folder without the extension
(``ward3/patient1_smear1``): unique within the folder, and readable. Optional:

- ``patient_pattern``: a regular expression with a named group ``patient``, searched in that path;
  the group's text is the patient id (stored only as its keyed hash, like a manifest's).
- ``labels``: a CSV with columns ``path`` (the image's path inside the folder) and ``label``
  (``normal``, ``L1``, ``L2``, ``L3``, or binary ``0``/``healthy``, ``1``/``ALL``/``leukemia``), and
  optionally ``patient_id`` (wins over the pattern).

Files with other extensions (a labels CSV, notes, ``Thumbs.db``) are not inputs and are counted,
not rejected; image files go through the same validation as every source (a broken ``.jpg`` is a
reject row with its reason).
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from allmtl_spark.errors import SourceError
from allmtl_spark.ingest.labels import LabelError, parse_label
from allmtl_spark.ingest.privacy import hash_patient_id

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
LABEL_COLUMNS = ("path", "label")
LABEL_OPTIONAL = ("patient_id",)


@dataclass(frozen=True)
class FolderEntry:
    """What the folder says about one image file: its id, patient and label text (pure, no Spark)."""

    relative: str  # path inside the folder, "/"-separated
    slide_id: str
    patient_id: str | None
    label: str | None


@dataclass
class FolderListing:
    """The images of a folder, and what was not taken."""

    entries: list[FolderEntry] = field(default_factory=list)
    not_images: Counter = field(default_factory=Counter)  # extension -> files that are not inputs
    unmatched_patients: int = 0  # images whose path the patient pattern did not match
    unknown_label_paths: list[str] = field(default_factory=list)  # labels CSV rows naming no image


def is_image_name(name: str) -> bool:
    """Whether a file name has one of ``IMAGE_SUFFIXES`` (any case)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def slide_id_of(relative: str) -> str:
    """``ward3/patient1_smear1.JPG`` -> ``ward3/patient1_smear1``: the path inside the folder without its extension."""
    head, _, tail = relative.rpartition("/")
    stem = tail.rsplit(".", 1)[0] if "." in tail else tail
    return f"{head}/{stem}" if head else stem


def patient_of(relative: str, pattern: re.Pattern | None) -> str | None:
    """The ``patient`` group of ``pattern`` searched in ``relative``; None without a pattern or a match."""
    if pattern is None:
        return None
    match = pattern.search(relative)
    return match.group("patient") if match and match.group("patient") else None


def list_entries(relatives: list[str], pattern: str | None = None, labels: pd.DataFrame | None = None) -> FolderListing:
    """What the folder's files are: image entries with ids, patients and labels, and the rest counted.

    Args:
        relatives: every file's path inside the folder ("/"-separated).
        pattern: ``patient_pattern`` (a regex with a named group ``patient``), or None.
        labels: the labels CSV as strings (columns ``path``, ``label``, optional ``patient_id``), or None.
    """
    compiled = re.compile(pattern) if pattern else None
    by_path = {}
    if labels is not None:
        for row in labels.itertuples(index=False):
            by_path[_normalise(row.path)] = row
    listing = FolderListing()
    for relative in sorted(relatives):
        name = relative.rsplit("/", 1)[-1]
        if not is_image_name(name):
            listing.not_images[posixpath.splitext(name)[1].lower() or "(none)"] += 1
            continue
        row = by_path.pop(relative, None)
        patient = (getattr(row, "patient_id", "") or "").strip() if row is not None else ""
        if not patient:
            patient = patient_of(relative, compiled)
            if compiled is not None and patient is None:
                listing.unmatched_patients += 1
        listing.entries.append(
            FolderEntry(relative, slide_id_of(relative), patient or None, row.label if row is not None else None)
        )
    listing.unknown_label_paths = sorted(by_path)
    return listing


def _normalise(path: str) -> str:
    """A labels CSV path as ``list_entries`` keys them: "/"-separated, no ``./``, no leading "/"."""
    text = str(path).strip().replace("\\", "/")
    return posixpath.normpath(text).lstrip("/") if text else ""


def read_labels(spark, uri: str) -> pd.DataFrame:
    """The labels CSV at ``uri`` as strings (any URI Spark reads).

    Raises:
        SourceError: missing, unreadable, or without the ``path`` and ``label`` columns.
    """
    from allmtl_spark.ingest.sources import qualify

    qualified, exists = qualify(spark, uri)
    if not exists:
        raise SourceError(f"labels file {uri} not found (score.source.labels / ingest.sources[].labels)")
    text = "\n".join(r.value for r in spark.read.text(qualified).collect())
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SourceError(f"labels file {uri} is not a readable CSV: {err}") from None
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise SourceError(
            f"labels file {uri} lacks column(s) {', '.join(missing)}; required: {', '.join(LABEL_COLUMNS)} "
            f"(path: the image's path inside the folder, label: normal, L1, L2, L3, 0, 1, healthy or ALL); "
            f"optional: {', '.join(LABEL_OPTIONAL)}"
        )
    return frame


def check_folder(spark, source) -> str:
    """The qualified URI of a ``kind: folder`` source's folder.

    Raises:
        SourceError: the folder does not exist or is a file.
    """
    from allmtl_spark.ingest.sources import qualify

    root, exists = qualify(spark, source.path)
    if not exists:
        raise SourceError(f"folder source {source.path} not found")
    if not _is_folder(spark, root):
        raise SourceError(f"folder source {source.path} is a file, not a folder (a manifest CSV is kind: manifest)")
    return root


def folder_items(spark, listed, key: bytes) -> list:
    """The ``ingest.sources.Item`` of every image under a listed ``kind: folder`` source (``sources.list_source``).

    Links outside the folder and files the listing could not read are items with their reject reason.

    Raises:
        SourceError: the labels file cannot be read.
    """
    from allmtl_spark.ingest.sources import Item, mark_unlisted

    source, files = listed.source, listed.listing.files
    base = listed.folder.rstrip("/") + "/"
    relatives = {path[len(base) :]: path for path in listed.listed() if path.startswith(base)}
    labels = read_labels(spark, source.labels) if source.labels else None
    listing = list_entries(list(relatives), source.patient_pattern, labels)
    _log_listing(source, listing)
    items = []
    for entry in listing.entries:
        path = relatives[entry.relative]
        item = Item(path, "slides", "folder", source.site, entry.slide_id, files.get(path, 0))
        item.patient_hash = hash_patient_id(entry.patient_id, key)
        if entry.label is not None and entry.label.strip():
            try:
                parsed = parse_label(entry.label)
                item.label_binary, item.label_fab = parsed.binary, parsed.fab
            except LabelError as err:
                item.pre_reason, item.pre_detail = err.reason, f"labels file {source.labels}: {err.detail}"
        mark_unlisted(item, listed.listing)
        items.append(item)
    return items


def _is_folder(spark, uri: str) -> bool:
    jvm = spark._jvm  # noqa: SLF001 - Hadoop FileSystem is only reachable through the JVM
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return bool(path.getFileSystem(spark._jsc.hadoopConfiguration()).getFileStatus(path).isDirectory())  # noqa: SLF001


def _log_listing(source, listing: FolderListing) -> None:
    if listing.not_images:
        counts = ", ".join(f"{ext} {n}" for ext, n in sorted(listing.not_images.items()))
        log.info(
            "folder %s: %d file(s) are not images (%s) and are not inputs; images end in %s",
            source.path,
            sum(listing.not_images.values()),
            counts,
            ", ".join(IMAGE_SUFFIXES),
        )
    if listing.unmatched_patients:
        log.warning(
            "folder %s: patient_pattern %r matched no patient in %d of %d image path(s); those slides have no patient",
            source.path,
            source.patient_pattern,
            listing.unmatched_patients,
            len(listing.entries),
        )
    if listing.unknown_label_paths:
        shown = ", ".join(listing.unknown_label_paths[:5])
        log.warning(
            "labels file %s names %d path(s) that are not images of %s: %s%s",
            source.labels,
            len(listing.unknown_label_paths),
            source.path,
            shown,
            " ..." if len(listing.unknown_label_paths) > 5 else "",
        )
