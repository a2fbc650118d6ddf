"""List a source folder: every file once, symbolic links resolved, nothing outside the folder read.

Local folders (``file:`` URIs and plain paths) are walked with ``os.scandir``: a symbolic link is
resolved, and one whose target lies outside the source folder is reported (``outside``), never
read; a link to a file inside the folder is read at its target (``read_paths``); a link to a folder
inside is walked once (a loop of links ends there). Anything that is not a regular file (a FIFO, a
socket, a device, a dangling link, a folder that cannot be listed) is reported as ``unreadable``.
Other file systems (HDFS, S3, ABFS, DBFS) are listed through Hadoop's FileSystem API, which has no
links to follow there. Names starting with ``.`` or ``_`` (``.DS_Store``, ``_SUCCESS``, our own
markers) are skipped, as Spark does, and counted (``skipped``), the files inside such folders too.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

from pyspark.sql import SparkSession


@dataclass
class Listing:
    """What a folder holds: readable files, files that must become reject rows, files skipped by name."""

    root: str  # qualified URI of the folder
    files: dict[str, int] = field(default_factory=dict)  # qualified path -> length in bytes
    read_paths: dict[str, str] = field(default_factory=dict)  # a link inside the folder -> its target
    outside: dict[str, str] = field(default_factory=dict)  # path -> why it is outside the folder
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> why it cannot be read
    skipped: list[str] = field(default_factory=list)  # paths skipped by name

    def read_path(self, path: str) -> str:
        """The path to read for the listed ``path`` (its target if it is a link)."""
        return self.read_paths.get(path, path)


def hidden(name: str) -> bool:
    """Names Spark and Hadoop treat as not data: a leading ``.`` or ``_``."""
    return name.startswith((".", "_"))


def list_folder(spark: SparkSession, uri: str, skip_hidden: bool = True) -> Listing:
    """Every file under the qualified folder ``uri`` (recursively); see the module docstring.

    Args:
        spark: the session (for non-local file systems).
        uri: a qualified folder URI (``file:/data/set``, ``hdfs://nn/data/set``).
        skip_hidden: skip (and count) names starting with ``.`` or ``_``; off for a manifest's
            folder, where the manifest names the files it wants.
    """
    if uri.startswith("file:"):
        return _list_local(uri, skip_hidden)
    return _list_hadoop(spark, uri, skip_hidden)


def _local_path(uri: str) -> str:
    path = uri[len("file:") :]
    return "/" + path.lstrip("/") if path.startswith("//") else path


def _list_local(uri: str, skip_hidden: bool) -> Listing:
    root = _local_path(uri).rstrip("/") or "/"
    real_root = os.path.realpath(root)
    listing = Listing(root=uri)

    def qualified(path: str) -> str:
        return f"file:{path}"

    def inside(real: str) -> bool:
        return real == real_root or real.startswith(real_root.rstrip("/") + "/")

    def count_skipped(path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            for folder, _, names in os.walk(path):
                listing.skipped += [qualified(os.path.join(folder, n)) for n in names]
        else:
            listing.skipped.append(qualified(path))

    visited = {real_root}

    def walk(folder: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            listing.unreadable[qualified(folder)] = f"the folder cannot be listed: {err.strerror}"
            return
        for entry in entries:
            path = entry.path
            if skip_hidden and hidden(entry.name):
                count_skipped(path)
                continue
            try:
                if entry.is_symlink():
                    _link(path)
                elif entry.is_dir(follow_symlinks=False):
                    visited.add(os.path.realpath(path))
                    walk(path)
                elif entry.is_file(follow_symlinks=False):
                    listing.files[qualified(path)] = entry.stat(follow_symlinks=False).st_size
                else:
                    listing.unreadable[qualified(path)] = "not a regular file (a FIFO, socket or device)"
            except OSError as err:  # vanished or unreadable while listing
                listing.unreadable[qualified(path)] = f"cannot be listed: {err.strerror}"

    def _link(path: str) -> None:
        real = os.path.realpath(path)
        if not inside(real):
            listing.outside[qualified(path)] = f"a symbolic link to {real}, outside the source folder {real_root}"
        elif os.path.isdir(real):
            if real not in visited:  # a folder reached twice (or a loop of links) is listed once
                visited.add(real)
                walk(path)
        elif os.path.isfile(real):
            listing.files[qualified(path)] = os.stat(real).st_size
            listing.read_paths[qualified(path)] = qualified(real)
        elif os.path.exists(real):
            listing.unreadable[qualified(path)] = f"a symbolic link to {real}, which is not a regular file"
        else:
            listing.unreadable[qualified(path)] = f"a symbolic link to {real}, which does not exist"

    if os.path.isdir(root):
        walk(root)
    return listing


def _list_hadoop(spark: SparkSession, uri: str, skip_hidden: bool) -> Listing:
    jvm = spark._jvm  # noqa: SLF001 - Hadoop FileSystem is only reachable through the JVM
    hpath = jvm.org.apache.hadoop.fs.Path(uri)
    fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())  # noqa: SLF001
    listing = Listing(root=uri)
    base = uri.rstrip("/") + "/"
    iterator = fs.listFiles(hpath, True)
    while iterator.hasNext():
        status = iterator.next()
        path = str(status.getPath().toString())
        relative = path[len(base) :] if path.startswith(base) else posixpath.basename(path)
        if skip_hidden and any(hidden(part) for part in relative.split("/")):
            listing.skipped.append(path)
        elif status.isFile():
            listing.files[path] = int(status.getLen())
    return listing


def read_small_file(spark: SparkSession, uri: str, limit: int = 64 * 1024 * 1024) -> bytes | None:
    """The bytes of a small file at any URI Spark reads (None if it does not exist), through Hadoop's FileSystem.

    Spark's file sources skip names starting with ``_``, which markers such as ``SYNTHETIC_MARKER`` have.
    """
    jvm = spark._jvm  # noqa: SLF001 - Hadoop FileSystem is only reachable through the JVM
    hpath = jvm.org.apache.hadoop.fs.Path(uri)
    fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())  # noqa: SLF001
    if not fs.exists(hpath) or not fs.getFileStatus(hpath).isFile():
        return None
    if fs.getFileStatus(hpath).getLen() > limit:
        raise ValueError(f"{uri} is larger than {limit} bytes")
    stream = fs.open(hpath)
    try:
        return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()
