"""Fetch a dataset's official files, verified by their published checksums.

Only :func:`download` touches the network; the loaders never do. Every file
is streamed to a temporary file beside its destination, checked against its
published md5 and only then renamed into place, so an interrupted or
tampered download never leaves a file that looks complete. The socket
timeout bounds every connect and every read, so an offline machine gets a
clear error within ``timeout`` seconds instead of hanging; a total ``deadline``
bounds the body's transfer, so a server that trickles a byte now and then
(each read within ``timeout``) cannot hold the download open forever.

Only https URLs are fetched (plain http only from this machine's loopback
address, for local mirrors and tests), a redirect is followed only to the
same host, and a download stops as soon as it exceeds the file's size cap,
so a wrong or hostile server can neither steer the download elsewhere nor
fill the disk.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm.auto import tqdm

from .._util import Interval, check_positive_int
from . import catalog
from .catalog import ENV_VAR, dataset_folder, dataset_info

CHUNK = 1 << 20
DEFAULT_DEADLINE = 3600.0  # seconds for one file's body: the largest catalogued file (182 MB) at 50 kB/s
DEFAULT_MAX_BYTES = 1 << 30  # for a file of unknown size: 1 GiB, above every catalogued file (the largest is 182 MB)
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")  # plain http to these never leaves the machine


class DownloadError(OSError):
    """A dataset file could not be fetched (offline, timeout, HTTP error, refused URL, redirect or size)."""


class ChecksumError(DownloadError):
    """A fetched file does not match its published checksum."""


def check_url(url: str) -> str:
    """The host of ``url``; DownloadError unless it is https (or plain http to this machine's loopback)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if host and (parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS)):
        return host
    raise DownloadError(f"refusing to download {url}: only https URLs are fetched "
                        "(a plain http download can be altered on its way)")


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same host, over https (or loopback http): never to another server."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old_host, new_host = urllib.parse.urlsplit(req.full_url).hostname, urllib.parse.urlsplit(newurl).hostname
        if new_host != old_host:
            fp.close()
            raise DownloadError(f"refusing the redirect of {req.full_url} from host {old_host} to another host, "
                                f"{new_host} ({newurl}); fetch the file by hand if that host is trusted")
        check_url(newurl)  # same host, but no step down from https to http
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_seconds(value, name: str) -> None:
    """ValueError naming ``name`` unless ``value`` is a positive number (bools refused)."""
    Interval(float, 0, closed="neither")(value, name)  # seconds


def _content_length(response) -> int | None:
    """The announced body size in bytes, or None when absent or malformed."""
    try:
        return int(response.headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None


def fetch(url: str, dest: str | os.PathLike, md5: str, *, timeout: float = 30, progress: bool = True,
          max_bytes: int = DEFAULT_MAX_BYTES, deadline: float = DEFAULT_DEADLINE) -> Path:
    """Download ``url`` to ``dest`` atomically, verified against ``md5`` (hex).

    Raises DownloadError when the URL is not https, a redirect leads to
    another host, the body is (or announces itself) larger than
    ``max_bytes``, or the server cannot be reached or stalls for more than
    ``timeout`` seconds (one read), or the body is not received within
    ``deadline`` seconds in all (checked between reads, so at most ``timeout``
    later); ChecksumError when the bytes do not match. In every case nothing
    is left at ``dest`` or beside it.
    """
    dest = Path(dest)
    check_url(url)
    _check_seconds(deadline, "deadline")
    max_bytes = check_positive_int(max_bytes, "max_bytes")
    too_big = f"{url} is larger than the {max_bytes:,} bytes allowed for {dest.name}"
    not_it = "refused: it is not the file expected, and nothing was written"
    opener = urllib.request.build_opener(_SameHostRedirects)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)  # md5 because that is what the publishers give
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with opener.open(url, timeout=timeout) as response:
                    total = _content_length(response)
                    if total is not None and total > max_bytes:
                        raise DownloadError(f"{too_big}: it announces {total:,} bytes; {not_it}")
                    received, stop = 0, time.monotonic() + deadline
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                        # read1: at most one socket read per call (read() would loop until CHUNK bytes came), so
                        # the clock is looked at between reads however slowly the bytes arrive
                        while chunk := response.read1(CHUNK):
                            if time.monotonic() > stop:
                                raise DownloadError(f"could not download {url}: {received:,} bytes in the "
                                                    f"{deadline:g} s allowed for the whole file (deadline); "
                                                    f"{not_it}")
                            received += len(chunk)
                            if received > max_bytes:  # stop streaming: a server may send more than it announced
                                raise DownloadError(f"{too_big}: stopped after {received:,} bytes; {not_it}")
                            digest.update(chunk)
                            out.write(chunk)
                            bar.update(len(chunk))
            except urllib.error.HTTPError as exc:  # the server answered, so not offline
                raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                raise DownloadError(
                    f"could not download {url} (timeout {timeout} s): {reason}. This machine may be offline: "
                    f"fetch the file elsewhere and put it at {dest}, or point {ENV_VAR} at a folder that has it."
                ) from exc
        got = digest.hexdigest()
        if got != md5.lower():
            raise ChecksumError(f"{url}: md5 {got} does not match the published {md5}; the download is corrupt "
                                "or was tampered with, nothing was written")
        os.replace(tmp, dest)  # atomic on one filesystem: dest is either absent or complete
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _extract_folder(archive: Path, member_folder: str, root: Path) -> Path:
    """Unpack ``member_folder`` of a tar archive into ``root`` (via a temporary folder, then renames)."""
    target = root / member_folder
    with tempfile.TemporaryDirectory(dir=root, prefix=".extract.") as tmp:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[0] == member_folder]
            if hasattr(tarfile, "data_filter"):  # refuses absolute paths and links out of the folder
                tar.extractall(tmp, members=members, filter="data")
            else:  # Python < 3.11.4: accept regular files and folders inside member_folder only
                members = [m for m in members if (m.isfile() or m.isdir()) and ".." not in m.name.split("/")]
                tar.extractall(tmp, members=members)
        target.mkdir(parents=True, exist_ok=True)
        for item in (Path(tmp) / member_folder).iterdir():
            os.replace(item, target / item.name)
    return target


def download(name: str, data_dir: str | os.PathLike | None = None, timeout: float = 30, *,
             force: bool = False, progress: bool = True) -> list[Path]:
    """Fetch the official files of dataset ``name`` into ``<data_dir>/<its folder>``.

    Files already present are kept unless ``force``. Returns the dataset's
    files on disk (empty for "digits", which ships with scikit-learn).
    Each file is capped a little above its known size (``Source.max_bytes``).
    Raises DownloadError when offline or stalled longer than ``timeout`` s, or
    when :func:`fetch` refuses a URL, a redirect or a size; ChecksumError when
    a file does not match its published md5.
    """
    info = dataset_info(name)
    _check_seconds(timeout, "timeout")
    root = Path(data_dir) if data_dir is not None else catalog.data_dir()
    folder = dataset_folder(name, root)
    expected = [folder / f for f in info.train_files + info.test_files]
    if info.archive_folder:
        if force or not all(p.is_file() for p in expected):
            for source in info.sources:
                archive = fetch(source.url, root / source.filename, source.md5, timeout=timeout, progress=progress,
                                max_bytes=source.max_bytes or DEFAULT_MAX_BYTES)
                try:
                    _extract_folder(archive, info.archive_folder, root)
                finally:
                    archive.unlink(missing_ok=True)
    else:
        for source in info.sources:
            dest = folder / source.filename
            if force or not dest.is_file():
                fetch(source.url, dest, source.md5, timeout=timeout, progress=progress,
                      max_bytes=source.max_bytes or DEFAULT_MAX_BYTES)
    return [p for p in expected if p.is_file()]


def add_arguments(parser) -> None:
    parser.add_argument("name", choices=[n for n in catalog.DATASETS if dataset_info(n).sources],
                        help="dataset to fetch")
    parser.add_argument("--data-dir", default=None, help=f"target folder (default ${ENV_VAR} or the project's data/)")
    parser.add_argument("--timeout", type=float, default=30, help="seconds before a stalled connection fails")
    parser.add_argument("--force", action="store_true", help="download again even if the files exist")


def run(args) -> int:
    """Fetch a dataset's official files, verified by their published checksums."""
    try:
        paths = download(args.name, args.data_dir, args.timeout, force=args.force)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0
