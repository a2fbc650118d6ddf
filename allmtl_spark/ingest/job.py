"""The ingest job: sources -> validated, deduplicated rows in ``slides`` / ``cells`` / ``rejects``.

Every input file ends as exactly one row: in ``slides`` or ``cells`` (keyed by content hash, the
file's path in ``source_path`` or ``duplicate_paths``), or in ``rejects`` with the reason; names
starting with ``.`` or ``_`` are skipped (as Spark does) and counted. A file that cannot be read
when its turn comes (vanished, replaced by a folder, no permission) is an ``unreadable`` reject,
retried by the next run. Writes are insert-only MERGEs, so a rerun or a concurrent run leaves the
same rows. Before anything is written the run's patient key is checked against the lakehouse's
(``docs/privacy.md``).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.config.schema import IngestConfig, PrivacyConfig
from allmtl_spark.ingest.pixel_size import make_pixel_size_udf
from allmtl_spark.ingest.privacy import PatientKey, patient_key
from allmtl_spark.ingest.pseudonyms import pseudonymise_items, pseudonymise_source
from allmtl_spark.ingest.sources import Item, SourceFiles, items_for_source, items_frame, list_source
from allmtl_spark.ingest.udfs import make_validate_udf
from allmtl_spark.ingest.validate import ImageLimits
from allmtl_spark.lakehouse import Lakehouse, delete_matched, merge_new_rows, read_table, table_exists
from allmtl_spark.rejects import reject_rows, retryable_sql
from allmtl_spark.session import assert_on_driver
from allmtl_spark.syncpoints import sync_point

log = logging.getLogger(__name__)

IMAGE_TABLES = {"slides": tables.SLIDES, "cells": tables.CELLS}
_ID_COLUMN = {"slides": "slide_id", "cells": "cell_id"}


@dataclass
class IngestSummary:
    """What one ingest run did; ``format()`` gives the printed summary."""

    run_id: str
    lakehouse: str
    files_seen: int
    inserted: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    rejects_this_run: dict[str, int] = field(default_factory=dict)
    pixel_sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, source) -> images this run
    defaulted: list[tuple[str, str, float, float | None]] = field(default_factory=list)  # id, table, um, estimate
    linked: dict[str, int] = field(default_factory=dict)  # cells' source slides: see source_slides.link_cells
    skipped_by_name: int = 0  # files under the sources whose name (or a folder's) starts with . or _

    def format(self) -> str:
        lines = [f"ingest run {self.run_id}: {self.files_seen} input file(s)", f"lakehouse: {self.lakehouse}"]
        if self.skipped_by_name:
            lines.append(f"  skipped by name (leading . or _, as Spark does): {self.skipped_by_name} file(s)")
        for name, total in self.totals.items():
            lines.append(f"  {name:<8} {total:>6} rows ({self.inserted.get(name, 0)} new)")
        if self.rejects_this_run:
            lines.append("  rejected inputs this run, by reason:")
            lines += [f"    {reason:<22} {n}" for reason, n in sorted(self.rejects_this_run.items())]
        else:
            lines.append("  no rejected inputs this run")
        if self.pixel_sizes:
            counts = ", ".join(f"{table} {source} {n}" for (table, source), n in sorted(self.pixel_sizes.items()))
            lines.append(f"  pixel size (um per pixel) of this run's images: {counts}")
        if self.defaulted:
            shown = ", ".join(
                f"{item} {um:g}" + (f" (estimate {est:.3g}, not confident)" if est else " (no red cells measured)")
                for item, _, um, est in self.defaulted[:5]
            )
            more = f" and {len(self.defaulted) - 5} more" if len(self.defaulted) > 5 else ""
            lines.append(
                f"  {len(self.defaulted)} image(s) at their source's default pixel size: {shown}{more}. Give the "
                "pixel size in the manifest (pixel_size_um) or in ingest.sources[].pixel_size_um"
            )
        if any(self.linked.values()):
            n = self.linked
            lines.append(
                f"  cells' source slides: {n.get('given', 0)} named by the manifest "
                f"({n.get('given_mismatch', 0)} of {n.get('given_scored', 0)} placed crops do not match), "
                f"{n.get('matched', 0)} found by template matching, {n.get('unmatched', 0)} not found"
            )
        return "\n".join(lines)


def run_ingest(
    spark: SparkSession, cfg: IngestConfig, privacy: PrivacyConfig, lake: Lakehouse, run_id: str | None = None
) -> IngestSummary:
    """Ingest every configured source into the lakehouse.

    Args:
        spark: the session (driver only).
        cfg: the ``ingest`` section (sources and limits).
        privacy: the ``privacy`` section (patient-id key).
        lake: where the tables live.
        run_id: recorded on every row; a new UUID by default.

    Returns:
        The run summary (rows per table, rejects by reason).

    Raises:
        SourceError: a source cannot be read; ConfigError: no sources, no usable patient key, or
            another key than the one the lakehouse's hashes were made with.
        LakehouseError: the lakehouse is not writable.
    """
    assert_on_driver()
    if not cfg.sources:
        from allmtl_spark.config.loader import ConfigError

        raise ConfigError("ingest.sources is empty: add at least one {kind: allidb1|allidb2|manifest, path: ...}")
    lake.check_writable()
    run_id = run_id or uuid.uuid4().hex[:12]
    listed = [list_source(spark, source) for source in cfg.sources]
    marker_files, why_not = _synthetic(spark, listed)
    key = patient_key(privacy, synthetic=why_not is None, sources=why_not or "the sources")
    _check_lakehouse_key(spark, lake, key, privacy, run_id)
    items: list[Item] = []
    for source in listed:
        found = items_for_source(spark, source, key.key, cfg.default_pixel_size_um)
        if pseudonymise_source(privacy, key.key, source.source.kind):
            pseudonymise_items(found, source.folder.rstrip("/"), key.key, privacy)
        items += found
    log.info("ingest %s: %d input files from %d source(s)", run_id, len(items), len(cfg.sources))
    sync_point("ingest:listed")  # inert unless a test changes the files between listing and reading
    checked = _validate(spark, items, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if key.demo:
            _check_still_synthetic(checked, marker_files, privacy)
        summary = _write(spark, lake, checked, run_id)
    finally:
        checked.unpersist()
    summary.files_seen = len(items)
    summary.skipped_by_name = sum(len(source.listing.skipped) for source in listed)
    if cfg.link_cells:
        from allmtl_spark.ingest.source_slides import link_cells

        summary.linked = link_cells(spark, lake, cfg.crop_match_min_score, cfg.crop_match_factor)
    return summary


def _synthetic(spark: SparkSession, listed: list[SourceFiles]) -> tuple[dict[str, str], str | None]:
    """({path: SHA-256} the generator recorded for the sources, why they are not all synthetic or None).

    A source is synthetic when every file listed under it is named by a ``privacy.SYNTHETIC_MARKER`` in
    a folder on its way up: the file's own folder or one above it, up to the source's folder and the
    folder above that. So a folder holding several ``allmtl synth`` outputs (``make demo-ood``'s four
    batches) is synthetic as a whole, and one file the generator did not write makes it not.

    One pass per file over the folders above it, each marker read once (cached by folder), and the
    recorded hashes gathered once per marker that named a file, not once per file.
    """
    from allmtl_spark.ingest.listing import read_small_file
    from allmtl_spark.ingest.privacy import SYNTHETIC_MARKER, SyntheticMarker, not_synthetic

    markers: dict[str, SyntheticMarker | None] = {}

    def marker_in(folder: str) -> SyntheticMarker | None:
        if folder not in markers:
            try:
                text = read_small_file(spark, f"{folder}/{SYNTHETIC_MARKER}")
            except ValueError:  # larger than a marker can be
                text = None
            markers[folder] = SyntheticMarker.parse(folder, text) if text is not None else None
        return markers[folder]

    used: dict[int, SyntheticMarker] = {}  # the markers that named a listed file, by identity
    for source in listed:
        base = source.folder.rstrip("/")
        place = f"{source.source.kind} source {source.source.path}"
        listed_paths = [p for p in source.listed() if not p.endswith(f"/{SYNTHETIC_MARKER}")]
        if not listed_paths:  # an empty source: synthetic when a marker says so
            why = not_synthetic(marker_in(base) or marker_in(base.rsplit("/", 1)[0]), [], place)
            if why is not None:
                return {}, why
        for path in listed_paths:
            found = nearest = None
            for folder in _folders_up(path, base):
                marker = marker_in(folder)
                if marker is None:
                    continue
                nearest = nearest or marker
                if path in marker.files:
                    found = marker
                    break
            why = not_synthetic(found or nearest, [path], place)
            if why is not None:  # the first file the generator did not write decides: nothing more is read
                return {}, why
            used[id(found)] = found
    recorded: dict[str, str] = {}
    for marker in used.values():
        recorded.update(marker.files)
    return recorded, None


def _folders_up(path: str, base: str) -> list[str]:
    """The folders from ``path``'s own up to ``base`` (a source folder), then the folder above ``base``."""
    folders = []
    folder = path.rsplit("/", 1)[0]
    while folder.startswith(base + "/"):
        folders.append(folder)
        folder = folder.rsplit("/", 1)[0]
    return [*folders, base, base.rsplit("/", 1)[0]]


def _check_lakehouse_key(
    spark: SparkSession, lake: Lakehouse, key: PatientKey, privacy: PrivacyConfig, run_id: str
) -> None:
    """Record the key's fingerprint in a lakehouse that has none; refuse a key other than the recorded one.

    Raises:
        ConfigError: the lakehouse's patient hashes were made with another key.
    """
    from datetime import datetime, timezone

    from allmtl_spark.config.loader import ConfigError
    from allmtl_spark.ingest.privacy import PURPOSE, how_to_set

    def stored():
        if not table_exists(spark, lake, tables.PRIVACY_KEYS):
            return None
        return read_table(spark, lake, tables.PRIVACY_KEYS).where(F.col("purpose") == PURPOSE).first()

    row = stored()
    if row is None:  # the first ingest (or a lakehouse from before the table): an insert-only MERGE on purpose
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        record = [(PURPOSE, key.fingerprint, key.demo, run_id, now)]
        merge_new_rows(spark, lake, tables.PRIVACY_KEYS, spark.createDataFrame(record, tables.PRIVACY_KEYS.schema))
        row = stored()  # a first ingest racing with this one may have recorded its key first
    if row["key_fingerprint"] == key.fingerprint:
        return
    if row["demo_key"]:
        raise ConfigError(
            f"privacy: the lakehouse {lake.root} holds synthetic data hashed with the public demo key; "
            "real data (a secret key) goes into a new lakehouse: set lakehouse.path to another folder"
        )
    raise ConfigError(
        f"privacy: the patient hashes in {lake.root} were made with another secret key (fingerprint "
        f"{row['key_fingerprint'][:12]}..., recorded by ingest run {row['recorded_by_run']}) than "
        f"${privacy.patient_key_env} holds now; hashes from two keys would split one patient in two and the "
        "patient-grouped splits would put the same patient in training and test. Use the lakehouse's key, "
        f"or a new lakehouse for a new key. {how_to_set(privacy)}"
    )


def _check_still_synthetic(checked: DataFrame, recorded: dict[str, str], privacy: PrivacyConfig) -> None:
    """With the demo key: every file read must still have the bytes the generator recorded.

    Raises:
        ConfigError: a file read is not one ``allmtl synth`` wrote, or its bytes changed since.
    """
    from allmtl_spark.config.loader import ConfigError
    from allmtl_spark.ingest.privacy import SYNTHETIC_MARKER, changed_since_written, how_to_set

    read: dict[str, str | None] = {}
    columns = [
        F.coalesce("read_path", "item_path").alias("path"),
        F.col("v.sha256").alias("sha"),
        "xyc_path",
        F.sha2("xyc", 256).alias("xyc_sha"),
        "mask_path",
        F.sha2("mask", 256).alias("mask_sha"),
    ]
    for row in checked.select(*columns).collect():
        for path, digest in ((row["path"], row["sha"]), (row["xyc_path"], row["xyc_sha"])):
            if path and digest:
                read[path] = digest
        if row["mask_path"] and row["mask_sha"]:
            read[row["mask_path"]] = row["mask_sha"]
    changed = changed_since_written(recorded, read)
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise ConfigError(
            f"privacy: {changed[0]}{more} was not (or changed since) written by `allmtl synth` (its SHA-256 is "
            f"not the one in {SYNTHETIC_MARKER}), so the public demo key cannot be used. {how_to_set(privacy)}"
        )


def _validate(spark: SparkSession, items: list[Item], cfg: IngestConfig) -> DataFrame:
    """Items joined with their bytes and companions, plus one ``v`` validation struct per item."""
    frame = items_frame(items)
    schema = (
        "item_path string, table string, source_kind string, site string, item_id string, length long, "
        "label_binary int, label_fab string, patient_hash string, xyc_path string, mask_path string, "
        "pre_reason string, pre_detail string, given_pixel_size_um double, default_pixel_size_um double, "
        "source_slide_id string, crop_x int, crop_y int, stored_path string, read_path string, xyc_length long, "
        "mask_length long"
    )
    items_df = spark.createDataFrame(frame.astype(object).where(frame.notna(), None), schema)
    items_df = items_df.withColumn("stored_path", F.coalesce("stored_path", "item_path"))
    limits = ImageLimits(cfg.max_file_bytes, cfg.max_pixels, cfg.min_side_px)
    readable = [i for i in items if i.pre_reason is None and i.length <= cfg.max_file_bytes]
    wanted = sorted(
        {i.read_path or i.item_path for i in readable}
        | {i.xyc_path for i in readable if i.xyc_path and (i.xyc_length or 0) <= cfg.max_xyc_bytes}
        | {i.mask_path for i in readable if i.mask_path and (i.mask_length or 0) <= cfg.max_file_bytes}
    )
    blobs = _read_binary(spark, wanted, cfg.max_partitions)
    items_df = items_df.withColumn("read_path", F.coalesce("read_path", "item_path"))
    joined = (
        items_df.join(blobs.select(F.col("path").alias("read_path"), "content"), "read_path", "left")
        .join(blobs.select(F.col("path").alias("xyc_path"), F.col("content").alias("xyc")), "xyc_path", "left")
        .join(blobs.select(F.col("path").alias("mask_path"), F.col("content").alias("mask")), "mask_path", "left")
    )
    # File scans skip zero-length files, so a listed empty file has no bytes; a file listed with bytes
    # but not read vanished or became unreadable after listing: null (an unreadable image, a bad companion).
    empty = F.lit(bytearray())
    xyc_unread = F.col("xyc_path").isNotNull() & F.col("xyc").isNull() & (F.coalesce("xyc_length", F.lit(1)) > 0)
    mask_unread = F.col("mask_path").isNotNull() & F.col("mask").isNull() & (F.coalesce("mask_length", F.lit(1)) > 0)
    joined = (
        joined.withColumn("content", F.coalesce("content", F.when(F.col("length") == 0, empty)))
        .withColumn("xyc_problem", _companion_problem(".xyc file", "xyc", cfg.max_xyc_bytes, "max_xyc_bytes"))
        .withColumn("mask_problem", _companion_problem("mask", "mask", cfg.max_file_bytes, "max_file_bytes"))
        .withColumn("xyc", F.when(~xyc_unread, F.coalesce("xyc", F.when(F.col("xyc_path").isNotNull(), empty))))
        .withColumn("mask", F.when(~mask_unread, F.coalesce("mask", F.when(F.col("mask_path").isNotNull(), empty))))
    )
    too_big = F.col("length") > cfg.max_file_bytes
    validate = make_validate_udf(limits)
    validated = joined.withColumn("v", validate("content", "xyc", "mask"))
    reason = (
        F.when(F.col("pre_reason").isNotNull(), F.col("pre_reason"))
        .when(too_big, F.lit("too_large_file"))
        .when(F.col("v.reason").isNotNull(), F.col("v.reason"))
        .when(F.col("xyc_problem").isNotNull(), F.lit("bad_xyc"))
        .when(F.col("mask_problem").isNotNull(), F.lit("bad_mask"))
    )
    detail = (
        F.when(F.col("pre_reason").isNotNull(), F.col("pre_detail"))
        .when(too_big, F.format_string(f"%d bytes exceeds ingest.max_file_bytes={cfg.max_file_bytes}", F.col("length")))
        .when(F.col("v.reason").isNotNull(), F.col("v.detail"))
        .otherwise(F.coalesce("xyc_problem", "mask_problem"))
    )
    pixel_size = make_pixel_size_udf(cfg.pixel_size_min_confidence)
    return (
        validated.withColumn("reason", reason)
        .withColumn("detail", detail)
        .withColumn(
            "px",
            pixel_size(F.when(reason.isNull(), F.col("content")), "given_pixel_size_um", "default_pixel_size_um"),
        )
    )


def _companion_problem(what: str, column: str, limit: int, key: str):
    """Why a listed companion (``xyc`` / ``mask``) is unusable before its bytes are looked at; null when fine."""
    length, path = F.col(f"{column}_length"), F.col(f"{column}_path")
    return (
        F.when(path.isNull(), F.lit(None))
        .when(length > limit, F.format_string(f"the {what} is %d bytes, above ingest.{key}={limit}", length))
        .when(
            F.col(column).isNull() & (F.coalesce(length, F.lit(1)) > 0),
            F.format_string(f"the {what} %s could not be read (it vanished or changed after listing)", path),
        )
    )


def _read_binary(spark: SparkSession, paths: list[str], max_partitions: int) -> DataFrame:
    """(path, content) of the files ``paths`` that can be read now; the others are missing from the result.

    A file may vanish, become a folder or lose its permissions after listing: missing files are
    dropped before Spark's load checks them (and ignored if they go later), unreadable ones ignored;
    a file replaced by a folder lists the folder's files, which match no item.
    """
    from pyspark.errors import AnalysisException

    empty = spark.createDataFrame([], "path string, content binary")
    remaining = list(paths)
    for _ in range(5):
        if not remaining:
            return empty
        try:
            frame = (
                spark.read.format("binaryFile")
                .option("ignoreMissingFiles", "true")
                .option("ignoreCorruptFiles", "true")  # an IO error on read (no permission): no bytes, not a crash
                .load([_glob_escape(p) for p in remaining])
            )
            break
        except AnalysisException as err:  # a path vanished between listing and this load
            if "PATH_NOT_FOUND" not in str(err) and "does not exist" not in str(err):
                raise
            remaining = _existing_files(spark, remaining)
    else:
        return empty
    frame = frame.select("path", "content")  # extra paths (a folder's files) find no item in the join
    return frame.repartition(min(max_partitions, max(1, len(remaining) // 4)))


def _existing_files(spark: SparkSession, paths: list[str]) -> list[str]:
    jvm = spark._jvm  # noqa: SLF001 - Hadoop FileSystem is only reachable through the JVM
    conf = spark._jsc.hadoopConfiguration()  # noqa: SLF001
    present = []
    for path in paths:
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(conf)
        if fs.exists(hpath) and fs.getFileStatus(hpath).isFile():
            present.append(path)
    return present


def _glob_escape(path: str) -> str:
    """Hadoop treats []{}*?\\ in load() paths as globs: escape them so names are taken literally."""
    return "".join("\\" + c if c in "[]{}*?\\" else c for c in path)


def _write(spark: SparkSession, lake: Lakehouse, checked: DataFrame, run_id: str) -> IngestSummary:
    good = checked.where(F.col("reason").isNull())
    # Found once, against the tables as they are before this run writes: every later step (two MERGEs,
    # their emptiness checks, the summary) reuses the rows instead of re-reading both tables each time.
    conflicts = _conflicting(spark, lake, good).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        conflicts.count()
        return _write_rows(spark, lake, checked, good, conflicts, run_id)
    finally:
        conflicts.unpersist()


def _write_rows(
    spark: SparkSession, lake: Lakehouse, checked: DataFrame, good: DataFrame, conflicts: DataFrame, run_id: str
) -> IngestSummary:
    now = F.current_timestamp()
    accepted = good.join(conflicts.select("item_path", "table"), ["item_path", "table"], "left_anti")
    rejected = (
        checked.where(F.col("reason").isNotNull())
        .select("stored_path", F.col("v.sha256").alias("sha256"), "reason", "detail")
        .unionByName(conflicts.select("stored_path", "sha256", "reason", "detail"))
    )
    summary = IngestSummary(run_id=run_id, lakehouse=lake.root, files_seen=0)
    for name, table in IMAGE_TABLES.items():
        rows = _table_rows(accepted.where(F.col("table") == name), name, run_id, now)
        summary.inserted[name] = merge_new_rows(spark, lake, table, rows, *_duplicate_path_update())
    reject_frame = reject_rows(rejected, stage="ingest", run_id=run_id, version=None, path_col="stored_path")
    summary.inserted["rejects"] = merge_new_rows(spark, lake, tables.REJECTS, reject_frame)
    _resolve_retryable(spark, lake, checked.select(F.col("stored_path").alias("item_path")), reject_frame)
    summary.rejects_this_run = dict(Counter(r["reason"] for r in rejected.select("reason").collect()))
    for row in accepted.select("table", "item_id", "px").collect():
        px = row["px"]
        summary.pixel_sizes[(row["table"], px["pixel_size_source"])] = (
            summary.pixel_sizes.get((row["table"], px["pixel_size_source"]), 0) + 1
        )
        if px["pixel_size_source"] == "default":
            summary.defaulted.append((row["item_id"], row["table"], px["pixel_size_um"], px["pixel_size_estimate_um"]))
    for table in (tables.SLIDES, tables.CELLS, tables.REJECTS):
        summary.totals[table.name] = read_table(spark, lake, table).count()
    return summary


def _resolve_retryable(spark: SparkSession, lake: Lakehouse, paths: DataFrame, reject_frame: DataFrame) -> None:
    """Delete earlier retryable ingest rejects (``unreadable``) of files this run read to another outcome.

    A file is then in ``slides``/``cells`` or has this run's reject row, never two rows.
    """
    keys = paths.distinct().join(
        reject_frame.select(F.col("source_path").alias("item_path"), "reject_key"), "item_path", "left"
    )
    delete_matched(
        spark,
        lake,
        tables.REJECTS,
        keys,
        "t.stage = 'ingest' AND t.source_path = s.item_path AND (s.reject_key IS NULL OR t.reject_key <> s.reject_key) "
        f"AND {retryable_sql('ingest')}",
    )


def _conflicting(spark: SparkSession, lake: Lakehouse, good: DataFrame) -> DataFrame:
    """Valid files whose bytes appear with different labels, in this batch or already in the table."""
    label = F.concat_ws(
        "/", F.coalesce(F.col("label_binary").cast("string"), F.lit("?")), F.coalesce(F.col("label_fab"), F.lit("?"))
    )
    batch = good.select("item_path", "stored_path", "table", F.col("v.sha256").alias("sha256"), label.alias("labels"))
    existing = None
    for name, table in IMAGE_TABLES.items():
        rows = read_table(spark, lake, table).select(
            F.lit(name).alias("table"),
            F.col("content_sha256").alias("sha256"),
            F.concat_ws(
                "/",
                F.coalesce(F.col("label_binary").cast("string"), F.lit("?")),
                F.coalesce(F.col("label_fab"), F.lit("?")),
            ).alias("stored_labels"),
        )
        existing = rows if existing is None else existing.unionByName(rows)
    per_hash = Window.partitionBy("table", "sha256")
    in_batch = (
        batch.withColumn("n_labels", F.size(F.collect_set("labels").over(per_hash)))
        .where(F.col("n_labels") > 1)
        .select(
            "item_path",
            "stored_path",
            "table",
            "sha256",
            F.lit("conflicting_labels").alias("reason"),
            F.format_string(
                "the same bytes arrive with different labels in this batch (%s here)", F.col("labels")
            ).alias("detail"),
        )
    )
    with_stored = (
        batch.join(existing, ["table", "sha256"])
        .where(F.col("labels") != F.col("stored_labels"))
        .select(
            "item_path",
            "stored_path",
            "table",
            "sha256",
            F.lit("conflicting_labels").alias("reason"),
            F.format_string(
                "the same bytes are already stored with labels %s; this file says %s",
                F.col("stored_labels"),
                F.col("labels"),
            ).alias("detail"),
        )
    )
    return in_batch.unionByName(with_stored).dropDuplicates(["item_path", "table"])


def _table_rows(accepted: DataFrame, name: str, run_id: str, now) -> DataFrame:
    """One row per content hash: the first path is ``source_path``, the others ``duplicate_paths``."""
    paths = F.array_sort(F.collect_set("stored_path"))
    # Copies of one file from several sources: a given pixel size wins over an estimate over a default.
    rank = F.when(F.col("px.pixel_size_source") == "given", 0).when(F.col("px.pixel_size_source") == "estimated", 1)
    pixel = F.min(F.struct(rank.otherwise(2).alias("rank"), F.col("px.pixel_size_um").alias("um"), "px"))
    grouped = accepted.groupBy(F.col("v.sha256").alias("content_sha256")).agg(
        paths.alias("paths"),
        pixel.alias("pixel"),
        F.first("v").alias("v"),
        F.min("item_id").alias("item_id"),
        *[
            F.first(c, ignorenulls=True).alias(c)
            for c in (
                "source_kind",
                "site",
                "label_binary",
                "label_fab",
                "patient_hash",
                "content",
                "mask",
                "xyc",
                "source_slide_id",
                "crop_x",
                "crop_y",
            )
        ],
    )
    columns = [
        F.col("item_id").alias(_ID_COLUMN[name]),
        "content_sha256",
        F.col("paths")[0].alias("source_path"),
        F.slice("paths", 2, 1 << 20).alias("duplicate_paths"),
        "source_kind",
        "site",
        F.col("v.format").alias("format"),
        F.col("v.width").alias("width"),
        F.col("v.height").alias("height"),
        F.col("v.channels").alias("channels"),
        F.col("v.bit_depth").alias("bit_depth"),
        "content",
        "label_binary",
        "label_fab",
        F.col("mask").alias("truth_mask"),
        "patient_hash",
        F.lit(run_id).alias("ingest_run_id"),
        now.alias("ingested_at"),
        F.col("pixel.px.pixel_size_um").alias("pixel_size_um"),
        F.col("pixel.px.pixel_size_source").alias("pixel_size_source"),
        F.col("pixel.px.pixel_size_confidence").alias("pixel_size_confidence"),
    ]
    if name == "slides":
        flat = F.col("v.centroids_flat")
        points = F.expr(
            "transform(sequence(0, size(v.centroids_flat) div 2 - 1), "
            "i -> named_struct('x', v.centroids_flat[2 * i], 'y', v.centroids_flat[2 * i + 1]))"
        )
        columns += [
            F.when(flat.isNull(), F.lit(None))
            .when(F.size(flat) == 0, F.array())
            .otherwise(points)
            .alias("blast_centroids"),
            F.col("xyc").isNotNull().alias("has_xyc"),
        ]
    else:  # the source slide is resolved (and the crop's place scored) by link_cells after the writes
        columns += [
            "source_slide_id",
            F.lit(None).cast("string").alias("source_slide_sha256"),
            F.lit(None).cast("double").alias("source_match_score"),
            F.col("crop_x").alias("source_crop_x"),
            F.col("crop_y").alias("source_crop_y"),
        ]
    return grouped.select(*columns)


def _duplicate_path_update() -> tuple[str, dict[str, str]]:
    """MERGE clause that records a newly seen duplicate path of already stored bytes."""
    all_source = "array_union(s.duplicate_paths, array(s.source_path))"
    all_target = "array_union(t.duplicate_paths, array(t.source_path))"
    condition = f"size(array_except({all_source}, {all_target})) > 0"
    new_set = {
        "duplicate_paths": f"array_sort(array_except(array_union(t.duplicate_paths, {all_source}), "
        "array(t.source_path)))"
    }
    return condition, new_set
