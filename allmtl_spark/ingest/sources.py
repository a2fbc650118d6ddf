"""Turn an ingest source (ALL-IDB1 folder, ALL-IDB2 folder, manifest CSV, plain folder) into a list of items.

An item is one input image file with what its source says about it: the table it belongs to,
its id, labels, companion files (.xyc, mask) and, when the source alone already shows it is
unusable (bad name, missing file, path outside the root, a file that cannot be read), the reject
reason. Listing runs on the driver (``listing.list_folder``: symbolic links resolved, only paths and
lengths, no bytes), so any URI Spark can read works.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import asdict, dataclass

import pandas as pd
from pyspark.sql import SparkSession

from allmtl_spark.config.schema import SourceConfig
from allmtl_spark.errors import SourceError
from allmtl_spark.ingest.labels import LabelError, parse_allidb_name, parse_label, stem_of
from allmtl_spark.ingest.listing import Listing, list_folder
from allmtl_spark.ingest.privacy import hash_patient_id
from allmtl_spark.units import check_pixel_size

MANIFEST_REQUIRED = ("path", "slide_id", "patient_id", "label")
MANIFEST_OPTIONAL = ("kind", "mask_path", "xyc_path", "site", "pixel_size_um", "source_slide_id", "crop_x", "crop_y")
_LAYOUT = {  # kind -> (image folder, table, companion .xyc folder)
    "allidb1": ("im", "slides", "xyc"),
    "allidb2": ("img", "cells", None),
}


@dataclass
class Item:
    """One input image file and what its source says about it."""

    item_path: str
    table: str
    source_kind: str
    site: str
    item_id: str
    length: int
    label_binary: int | None = None
    label_fab: str | None = None
    patient_hash: str | None = None
    xyc_path: str | None = None
    mask_path: str | None = None
    pre_reason: str | None = None
    pre_detail: str | None = None
    given_pixel_size_um: float | None = None  # manifest column or source config; None: estimate it
    default_pixel_size_um: float | None = None  # when not given and the estimate is not confident
    source_slide_id: str | None = None  # cells: the slide the crop was cut from (manifest)
    crop_x: int | None = None  # cells: top-left pixel of the crop in that slide (manifest)
    crop_y: int | None = None
    stored_path: str | None = None  # what the tables keep (a pseudonym: privacy.pseudonymise_names); None: item_path
    read_path: str | None = None  # where the bytes are read: the target of a symbolic link; None: item_path
    xyc_length: int | None = None  # bytes of the companions when listed (size limits are checked unread)
    mask_length: int | None = None


ITEM_COLUMNS = list(Item.__dataclass_fields__)


def qualify(spark: SparkSession, path: str) -> tuple[str, bool]:
    """Fully qualified URI of ``path`` (``file:/...`` for local folders) and whether it exists."""
    jvm = spark._jvm  # noqa: SLF001 - Hadoop FileSystem is only reachable through the JVM
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())  # noqa: SLF001
    return str(fs.makeQualified(hpath).toString()), bool(fs.exists(hpath))


@dataclass
class SourceFiles:
    """One configured source, listed: its folder (the manifest's folder for a manifest) and its files."""

    source: SourceConfig
    folder: str  # qualified URI
    listing: Listing
    manifest_uri: str | None = None

    def listed(self) -> list[str]:
        """Every path the source lists (files, links, unreadable entries), qualified."""
        listing = self.listing
        return sorted({*listing.files, *listing.outside, *listing.unreadable})


def list_source(spark: SparkSession, source: SourceConfig) -> SourceFiles:
    """List a source's folder once (see ``listing.list_folder``).

    Raises:
        SourceError: the source folder or manifest does not exist.
    """
    if source.kind == "manifest":
        manifest_uri, exists = qualify(spark, source.path)
        if not exists:
            raise SourceError(f"manifest {source.path} not found")
        folder = posixpath.dirname(manifest_uri)
        return SourceFiles(source, folder, list_folder(spark, folder, skip_hidden=False), manifest_uri)
    if source.kind == "folder":
        from allmtl_spark.ingest.folder import check_folder

        root = check_folder(spark, source)
        return SourceFiles(source, root, list_folder(spark, root))
    image_dir = _LAYOUT[source.kind][0]
    root, exists = qualify(spark, source.path)
    images_root = f"{root.rstrip('/')}/{image_dir}"
    if not exists or not qualify(spark, images_root)[1]:
        raise SourceError(
            f"{source.kind} source {source.path}: folder {images_root} not found "
            f"(expected the ALL-IDB layout <root>/{image_dir}/ImNNN_L.ext)"
        )
    return SourceFiles(source, root, list_folder(spark, root))


def items_for_source(
    spark: SparkSession, listed: SourceFiles, key: bytes, default_pixel_size_um: float | None = None
) -> list[Item]:
    """The items of one listed source (``list_source``).

    Args:
        key: the patient-id HMAC key (manifests' ``patient_id``).
        default_pixel_size_um: ``ingest.default_pixel_size_um``; the source's own default wins.

    Raises:
        SourceError: the manifest is not a readable CSV or lacks columns.
    """
    source = listed.source
    if source.kind == "manifest":
        items = _manifest_items(spark, listed, key)
    elif source.kind == "folder":
        from allmtl_spark.ingest.folder import folder_items

        items = folder_items(spark, listed, key)
    else:
        items = _folder_items(listed)
    for item in items:
        if item.given_pixel_size_um is None:
            item.given_pixel_size_um = source.pixel_size_um
        item.default_pixel_size_um = source.default_pixel_size_um or default_pixel_size_um
    return items


def items_frame(items: list[Item]) -> pd.DataFrame:
    return pd.DataFrame([asdict(i) for i in items], columns=ITEM_COLUMNS)


def _folder_items(listed: SourceFiles) -> list[Item]:
    source, listing = listed.source, listed.listing
    image_dir, table, xyc_dir = _LAYOUT[source.kind]
    images_root = f"{listed.folder.rstrip('/')}/{image_dir}"
    companions = {(posixpath.basename(posixpath.dirname(p)), stem_of(posixpath.basename(p))): p for p in listing.files}
    items = []
    for path in listed.listed():
        if not path.startswith(images_root + "/"):
            continue
        name = posixpath.basename(path)
        item = Item(path, table, source.kind, source.site, stem_of(name), listing.files.get(path, 0))
        try:
            parsed = parse_allidb_name(name)
            item.item_id, item.label_binary = parsed.stem, parsed.label
        except LabelError as err:
            item.pre_reason, item.pre_detail = err.reason, err.detail
        stem = stem_of(name)
        item.mask_path = companions.get(("masks", stem))
        if xyc_dir:
            item.xyc_path = companions.get((xyc_dir, stem))
        mark_unlisted(item, listing)
        items.append(item)
    return items


def mark_unlisted(item: Item, listing: Listing) -> None:
    """Where to read the item and its companions, and the reject of one listing could not read."""
    item.read_path = listing.read_path(item.item_path)
    if item.xyc_path:
        item.xyc_length, item.xyc_path = listing.files.get(item.xyc_path), listing.read_path(item.xyc_path)
    if item.mask_path:
        item.mask_length, item.mask_path = listing.files.get(item.mask_path), listing.read_path(item.mask_path)
    if item.item_path in listing.outside:
        item.pre_reason, item.pre_detail = "path_outside_root", listing.outside[item.item_path]
    elif item.item_path in listing.unreadable:
        item.pre_reason, item.pre_detail = "unreadable", listing.unreadable[item.item_path]


def _manifest_items(spark: SparkSession, listed: SourceFiles, key: bytes) -> list[Item]:
    frame = _read_manifest(spark, listed.manifest_uri)
    items = []
    for row in frame.itertuples(index=False):
        items.append(_manifest_item(row._asdict(), listed.folder, listed.listing, listed.source, key))
    return _drop_repeated_rows(items)


def _read_manifest(spark: SparkSession, manifest_uri: str) -> pd.DataFrame:
    text = "\n".join(r.value for r in spark.read.text(manifest_uri).collect())
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SourceError(f"manifest {manifest_uri} is not a readable CSV: {err}") from None
    missing = [c for c in MANIFEST_REQUIRED if c not in frame.columns]
    if missing:
        raise SourceError(
            f"manifest {manifest_uri} lacks column(s) {', '.join(missing)}; "
            f"required: {', '.join(MANIFEST_REQUIRED)}; optional: {', '.join(MANIFEST_OPTIONAL)}"
        )
    for column in MANIFEST_OPTIONAL:
        if column not in frame.columns:
            frame[column] = ""
    return frame


def _manifest_item(row: dict, root: str, listing: Listing, source: SourceConfig, key: bytes) -> Item:
    files = listing.files
    kind = (row["kind"] or "slide").strip().lower()
    table = {"slide": "slides", "cell": "cells"}.get(kind, "slides")
    path, outside = resolve_under(root, row["path"])
    item = Item(
        path,
        table,
        "manifest",
        row["site"] or source.site,
        row["slide_id"].strip() or stem_of(posixpath.basename(path)),
        files.get(path, 0),
    )
    item.patient_hash = hash_patient_id(row["patient_id"], key)
    if table == "cells":
        item.source_slide_id = row["source_slide_id"].strip() or None
        item.crop_x, item.crop_y = _pixel(row["crop_x"]), _pixel(row["crop_y"])
    item.xyc_path = _companion(root, row["xyc_path"], files)
    item.mask_path = _companion(root, row["mask_path"], files)
    try:
        labels = parse_label(row["label"])
        item.label_binary, item.label_fab = labels.binary, labels.fab
    except LabelError as err:
        item.pre_reason, item.pre_detail = err.reason, err.detail
    if row["pixel_size_um"].strip():
        try:
            item.given_pixel_size_um = check_pixel_size(row["pixel_size_um"])
        except ValueError as err:
            item.pre_reason, item.pre_detail = "bad_pixel_size", f"manifest pixel_size_um: {err}"
    if kind not in ("slide", "cell"):
        item.pre_reason, item.pre_detail = "bad_kind", f"kind {kind!r} must be slide or cell"
    if outside:
        item.pre_reason, item.pre_detail = "path_outside_root", f"{row['path']!r} resolves outside {root}"
    elif path in listing.outside or path in listing.unreadable:
        mark_unlisted(item, listing)
    elif path not in files:
        item.pre_reason, item.pre_detail = "missing_file", f"{row['path']!r} listed in the manifest does not exist"
    elif row["xyc_path"].strip() and item.xyc_path is None:
        item.pre_reason, item.pre_detail = "bad_xyc", f"xyc file {row['xyc_path']!r} does not exist"
    else:
        mark_unlisted(item, listing)
    return item


def _pixel(text: str) -> int | None:
    """A manifest's crop_x / crop_y cell: a non-negative integer pixel, or None when empty or not one."""
    try:
        value = int(float(text.strip()))
    except ValueError:
        return None
    return value if value >= 0 else None


def resolve_under(root: str, relative: str) -> tuple[str, bool]:
    """Join a manifest path to the manifest's folder; also say whether it escapes that folder.

    Args:
        root: qualified URI of the manifest's folder (``file:/data/set``).
        relative: the manifest's path cell: relative, or absolute within the same file system.

    Returns:
        ``(qualified path, outside_root)``.
    """
    relative = relative.strip()
    scheme, _, root_path = root.partition(":") if ":" in root else ("", "", root)
    if relative.startswith(f"{scheme}:") and scheme:
        relative = relative.partition(":")[2]
    joined = posixpath.normpath(relative if relative.startswith("/") else posixpath.join(root_path, relative))
    base = posixpath.normpath(root_path)
    outside = not (joined == base or joined.startswith(base.rstrip("/") + "/"))
    return (f"{scheme}:{joined}" if scheme else joined), outside


def _companion(root: str, relative: str, files: dict[str, int]) -> str | None:
    if not relative.strip():
        return None
    path, outside = resolve_under(root, relative)
    return path if not outside and path in files else None


def _drop_repeated_rows(items: list[Item]) -> list[Item]:
    """A manifest that lists the same file twice with the same facts describes one input."""
    seen, unique = set(), []
    for item in items:
        fingerprint = tuple(asdict(item).values())
        if fingerprint not in seen:
            seen.add(fingerprint)
            unique.append(item)
    return unique
