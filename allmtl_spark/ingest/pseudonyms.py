"""Pseudonymised names: slide and cell ids and stored paths as keyed hashes of the file names.

File and folder names often carry identifiers (``ward3/patient1_smear1.jpg``). With
``privacy.pseudonymise_names`` ingest stores, instead of the name, ``HMAC-SHA256(key, "name:" + name)``
cut to 16 hex digits (64 bits), under the same secret key as the patient ids (``ingest.privacy``):
the same name gives the same pseudonym on every run, nobody without the key can recompute it from
a guessed name, and a name never gives the hash its text would give as a patient id. The raw name
and path are not stored at all (``docs/privacy.md``); whoever holds the key and the files can
recompute a file's pseudonym with ``name_pseudonym``.

Pure functions on ``ingest.sources.Item`` lists; no Spark.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re

from allmtl_spark.config.schema import PrivacyConfig
from allmtl_spark.ingest.privacy import DEMO_KEY

PSEUDONYM_HEX = 16  # 64 bits: collisions are negligible below ~10^8 names
_NAME_DOMAIN = b"name:"  # domain separation: a name never hashes to its text's patient-id hash
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# ALL-IDB ids (ImNNN_L: a number and the binary label) hold no identifier and are kept as they are, so a
# cell of a pseudonymised manifest can still name its slide from an ALL-IDB folder (source_slide_id).
_ALLIDB_ID = re.compile(r"Im\d+_[01]")


def id_pseudonym(item_id: str, key: bytes, prefix_chars: int = 0) -> str:
    """The stored id of a slide or cell: ``name_pseudonym``, except ALL-IDB ids (``Im001_1``), which are kept."""
    return item_id if _ALLIDB_ID.fullmatch(item_id) else name_pseudonym(item_id, key, prefix_chars)


def name_pseudonym(name: str, key: bytes, prefix_chars: int = 0) -> str:
    """The pseudonym of a name: 16 hex digits of its keyed hash, after ``prefix_chars`` readable characters.

    Args:
        name: an id or a path inside a source ("/"-separated).
        key: the patient key (``ingest.privacy.patient_key``).
        prefix_chars: leading characters of ``name`` kept (characters other than letters, digits, ``._-``
            become ``_``), joined to the hash by ``-``; 0 keeps none.

    Returns:
        ``3f9a1c0d2b4e5f60``, or with ``prefix_chars=5`` and ``ward3/p1``: ``ward3-3f9a1c0d2b4e5f60``.
    """
    digest = hmac.new(key, _NAME_DOMAIN + name.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]
    prefix = _UNSAFE.sub("_", name[:prefix_chars]) if prefix_chars > 0 else ""
    return f"{prefix}-{digest}" if prefix else digest


def pseudonymise_source(privacy: PrivacyConfig, key: bytes, kind: str) -> bool:
    """Whether a source's names are pseudonymised: ``privacy.pseudonymise_names``, or when it is null, for sources
    whose names are free text, unless they are synthetic.

    Free text: a plain folder's file and folder names, a manifest's ``slide_id`` and paths. The ALL-IDB layouts'
    names are ``ImNNN_L`` (a number and the label; any other name is rejected), which hold no identifier. Synthetic:
    a manifest hashed with the public demo key (``allmtl synth`` writes manifests, never plain folders).
    """
    if privacy.pseudonymise_names is not None:
        return privacy.pseudonymise_names
    if kind == "manifest":
        return key != DEMO_KEY.encode()
    return kind == "folder"


def stored_path(root: str, item_path: str, key: bytes, privacy: PrivacyConfig) -> str:
    """The path stored for ``item_path``: its source's folder ``root`` followed by the pseudonym of the path
    inside it (and its extension with ``pseudonym_keep_extension``). Folders inside the source are part of
    the hashed name; ``root``, the folder the user named, is kept so a source's rows can be found by it."""
    base = root.rstrip("/")
    relative = item_path[len(base) + 1 :] if item_path.startswith(base + "/") else item_path
    extension = posixpath.splitext(relative)[1].lower() if privacy.pseudonym_keep_extension else ""
    return f"{base}/{name_pseudonym(relative, key, privacy.pseudonym_prefix_chars)}{extension}"


def pseudonymise_items(items: list, root: str, key: bytes, privacy: PrivacyConfig) -> None:
    """Replace, in place, the names of one source's items by their pseudonyms.

    ``item_id`` and ``source_slide_id`` (a cell's slide, named by its id: both get the same pseudonym, so the
    link holds) become ``id_pseudonym``; ``stored_path`` becomes ``stored_path(...)`` (``item_path`` stays:
    ingest reads the bytes from it, and stores only ``stored_path``); a reject detail written from the names
    has them replaced by their pseudonyms.

    Args:
        items: ``ingest.sources.Item`` of one source.
        root: the source's folder as a qualified URI (``sources.SourceFiles.folder``).
    """
    prefix = privacy.pseudonym_prefix_chars
    base = root.rstrip("/") + "/"
    for item in items:
        names = {}
        for path in (item.item_path, item.xyc_path, item.mask_path):
            if path:
                hidden = stored_path(root, path, key, privacy)
                names[path] = hidden
                if path.startswith(base):
                    names[path[len(base) :]] = hidden[len(base) :]
                file_name = posixpath.basename(path)
                names[file_name] = posixpath.basename(hidden)
                names[posixpath.splitext(file_name)[0]] = posixpath.splitext(posixpath.basename(hidden))[0]
        names[item.item_id] = id_pseudonym(item.item_id, key, prefix)
        item.stored_path = names[item.item_path]
        item.item_id = names[item.item_id]
        if item.source_slide_id:
            item.source_slide_id = id_pseudonym(item.source_slide_id, key, prefix)
        if item.pre_detail:
            item.pre_detail = redact(item.pre_detail, names)


def redact(text: str, names: dict[str, str]) -> str:
    """``text`` with every name of ``names`` replaced by its pseudonym (longest first, in one pass)."""
    wanted = sorted((n for n in names if n), key=len, reverse=True)
    if not wanted:
        return text
    return re.sub("|".join(map(re.escape, wanted)), lambda m: names[m.group(0)], text)
