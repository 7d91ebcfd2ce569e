"""Downloading published files safely: streamed, resumable, verified, atomic.

``download`` streams a URL into ``<dest>.part`` beside the destination, resumes that
partial file with an HTTP Range request when the server allows it, verifies a sha256
(or md5) when one is known, and only then renames the file onto ``dest``. A broken
connection, a short body or a wrong checksum therefore never leaves a file at ``dest``.

Checksums of the files the toolkit fetches are mostly not published. With ``record``
(a JSON file, e.g. weights/checksums.json) the sha256 of the first download is written
there and later downloads of the same file name are verified against it.
"""
import hashlib
import http.client
import json
import os
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib

from python_layers import ToolkitError
from pixelfeedback.files import atomic_path, write_json

CHUNK = 1 << 20
TIMEOUT_S = 60


def file_digest(path, algorithm="sha256", progress=False):
    """Hex digest of a file, read in chunks (archives are gigabytes)."""
    from tqdm import tqdm

    digest = hashlib.new(algorithm)
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True,
                                     desc=f"{algorithm} {os.path.basename(path)}",
                                     disable=not progress, leave=False) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def read_checksums(record):
    """The {file name: {"sha256": ..., "url": ..., "size": ...}} table at ``record``."""
    if record is None or not os.path.exists(record):
        return {}
    try:
        with open(record) as f:
            table = json.load(f)
    except (OSError, ValueError) as exc:
        raise ToolkitError(f"cannot read checksum record {record}: {exc}; "
                           "fix or delete it") from None
    if not isinstance(table, dict):
        raise ToolkitError(f"checksum record {record} is not a JSON object; fix or delete it")
    return table


def record_checksum(record, name, sha256, url=None, size=None):
    """Add or replace the entry for ``name`` in the JSON checksum record (atomic write)."""
    table = read_checksums(record)
    table[name] = {"sha256": sha256, "url": url, "size": size}
    write_json(record, table)


def verify_file(path, sha256=None, md5=None, what=None, progress=False, hint=None):
    """Raise ToolkitError unless ``path`` has the given digests (None = not checked)."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        got = file_digest(path, algorithm, progress=progress)
        if got.lower() != expected.lower():
            raise ToolkitError(
                f"{algorithm} mismatch for {what or path}: expected {expected}, got {got}. "
                + (hint or "The file is corrupt or not the published one: delete it and "
                   "download again, or check the mirror"))


def download(url, dest, sha256=None, md5=None, progress=True, record=None, member=None,
             resume=True, check=None, replace_record=False, replace_advice=None):
    """Fetch ``url`` to ``dest`` atomically; returns {"path", "sha256", "size", "recorded"}
    ("sha256" is None when neither given, recorded nor asked for by ``record``).

    sha256 / md5: expected digests of the file at ``dest`` (with ``member``, of the
    extracted member). record: JSON checksum file; when ``sha256`` is None and the record
    has an entry for ``basename(dest)``, that entry is verified, and when it has none the
    new sha256 is recorded ("recorded": True, also when it replaced one). check: called
    with the path of the downloaded file before it is renamed onto ``dest`` or recorded;
    a ToolkitError it raises deletes the download (a file that is not what it should be is
    never kept nor recorded). replace_record: a recorded sha256 is not verified but
    replaced by the new file's (once ``check`` passed). replace_advice: how to do that,
    said on a mismatch with the record. member: the url is a zip or tar archive and
    ``dest`` becomes its member of that name (the archive is deleted afterwards).
    resume: continue a ``.part`` file left by an interrupted download.
    """
    dest = os.fspath(dest)
    name = os.path.basename(dest)
    known = read_checksums(record).get(name) if record else None
    hint = None
    if sha256 is None and known and not replace_record:
        sha256 = known.get("sha256")
        hint = (f"The sha256 was recorded in {record} at the first download, so the file on "
                "the server (or the mirror) changed or the transfer was corrupted. Try again; "
                "if the new file is intended, "
                + (replace_advice or f"delete the entry {name!r} from {record}"))
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)

    if member is None:
        part = dest + ".part"
        fetch_to_part(url, part, progress=progress, resume=resume)
        try:
            verify_file(part, sha256, md5, what=f"{url} (for {dest})", progress=progress,
                        hint=hint)
            if check is not None:
                check(part)
        except ToolkitError:
            os.unlink(part)  # a wrong file is not worth resuming
            raise
        digest = sha256 or (file_digest(part) if record else None)
        os.replace(part, dest)
    else:
        archive_part = dest + ".archive.part"
        fetch_to_part(url, archive_part, progress=progress, resume=resume)
        with atomic_path(dest) as tmp:
            try:
                extract_member(archive_part, member, tmp, url=url)
                verify_file(tmp, sha256, md5, what=f"{member} in {url}", progress=progress,
                            hint=hint)
                if check is not None:
                    check(tmp)
            except ToolkitError:
                os.unlink(archive_part)  # a wrong archive is not worth resuming
                raise
            digest = sha256 or (file_digest(tmp) if record else None)
        os.unlink(archive_part)

    size = os.path.getsize(dest)
    recorded = False
    if record and (not known or (replace_record and known.get("sha256") != digest)):
        record_checksum(record, name, digest, url=url, size=size)
        recorded = True
    return {"path": dest, "sha256": digest, "size": size, "recorded": recorded}


def fetch_to_part(url, part, progress=True, resume=True):
    """Stream ``url`` into the file ``part``, continuing it with a Range request if possible.

    Raises ToolkitError (keeping ``part`` for a later resume) when the connection breaks
    or the body is shorter than announced.
    """
    from tqdm import tqdm

    have = os.path.getsize(part) if resume and os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "pixel-feedback-caffe"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part is complete or larger than the file: restart
            os.unlink(part)
            return fetch_to_part(url, part, progress=progress, resume=False)
        raise ToolkitError(f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the "
                           "URL (or --base-url mirror) and try again") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolkitError(f"cannot connect to {url}: {reason}; check the network or use a "
                           "mirror with --base-url") from None

    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None and length.isdigit() else None
        if have and status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):  # not the part we asked for
                response.close()
                os.unlink(part)
                return fetch_to_part(url, part, progress=progress, resume=False)
            mode, start = "ab", have
        else:  # the server ignored Range (or none was sent): start from the beginning
            mode, start = "wb", 0
        expected = start + length if length is not None else None
        received = 0
        try:
            with open(part, mode) as f, tqdm(total=expected, initial=start, unit="B",
                                             unit_scale=True, desc=os.path.basename(url),
                                             disable=not progress) as bar:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    _write_chunk(f, chunk, part)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, socket.timeout, http.client.HTTPException) as exc:
            if isinstance(exc, OSError) and exc.filename == part:
                raise   # the disk (full, read-only), not the connection: the tools say so
            raise ToolkitError(
                f"download of {url} broke off after {start + received} bytes"
                f"{f' of {expected}' if expected else ''} ({exc.__class__.__name__}: {exc}); "
                f"run the same command again to resume from {part}") from None
    if length is not None and received < length:
        raise ToolkitError(
            f"download of {url} is incomplete: got {start + received} of {expected} bytes "
            f"(the connection closed early); run the same command again to resume from {part}")


def _write_chunk(f, chunk, part):
    """Write a chunk of the download; an OSError names ``part`` (f.write's does not)."""
    try:
        f.write(chunk)
        f.flush()
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, part) from None


def extract_member(archive, member, out_path, url=None):
    """Copy one member of a zip or tar archive to ``out_path``.

    ``member`` is matched exactly, or else as the unique member whose path ends with
    ``/member`` (archives often wrap files in a folder).
    """
    source = url or archive
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                found = _pick_member(zf.namelist(), member, source)
                with zf.open(found) as src, open(out_path, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            return
        with tarfile.open(archive) as tf:
            names = [m.name for m in tf.getmembers() if m.isfile()]
            found = _pick_member(names, member, source)
            with tf.extractfile(found) as src, open(out_path, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ToolkitError(f"{source} is not a readable zip or tar archive ({exc}); the "
                           "download is corrupt or the URL is wrong: check it and try again") \
            from None


def _pick_member(names, member, source):
    if member in names:
        return member
    matches = [n for n in names if n.endswith("/" + member)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ToolkitError(f"{source} has no member {member!r} (it has {len(names)} files, "
                           f"e.g. {names[:3]}); check the model registry entry")
    raise ToolkitError(f"{source} has several members named {member!r}: {matches[:3]}; "
                       "name the member with its folder")
