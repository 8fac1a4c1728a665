"""qmlnb.data.download at its edges: the cases a mutmut run over download.py showed no other test pins.

Defaults (the data folder, the progress bar, ``--timeout``), files already present kept unless forced, an
archive's unpacking (only its folder, links inside it, through a temporary folder beside the data, again over
an earlier copy) and the command line's help and choices.
"""
from __future__ import annotations

import dataclasses
import io
import os
import re
import socket
import tarfile
from pathlib import Path

import pytest

from test_data import (PAYLOAD, _closed_port, _md5, local_server, svhn_labels, tricky_server,  # noqa: F401 (fixtures)
                       write_svhn)

from qmlnb.cli import main
from qmlnb.data import catalog, download
from qmlnb.data.download import ChecksumError, DownloadError, check_url, fetch


@pytest.fixture
def served_svhn(local_server, monkeypatch):
    """SVHN's two files on the local server, the catalogue pointed at them; yields the served folder."""
    served, url = local_server
    for name, seed in (("train_32x32.mat", 1), ("test_32x32.mat", 2)):
        write_svhn(served / name, svhn_labels(1, seed), seed)
    sources = tuple(catalog.Source(url + n, n, _md5((served / n).read_bytes()))
                    for n in ("train_32x32.mat", "test_32x32.mat"))
    monkeypatch.setitem(catalog.INFO, "svhn", dataclasses.replace(catalog.INFO["svhn"], sources=sources))
    return served


def test_present_files_are_kept_unless_forced_and_the_default_folder_is_the_environments(
        served_svhn, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(catalog.ENV_VAR, str(tmp_path / "env-data"))
    paths = download("svhn")  # no data_dir: the environment's folder; the progress bar is on by default
    assert paths[0] == tmp_path / "env-data" / "svhn" / "train_32x32.mat"
    assert "test_32x32.mat" in capsys.readouterr().err  # tqdm's bar, named after the file
    paths[0].write_bytes(b"a local copy")
    download("svhn", progress=False)
    assert paths[0].read_bytes() == b"a local copy"  # present: not fetched again
    download("svhn", progress=False, force=True)
    assert paths[0].read_bytes() == (served_svhn / "train_32x32.mat").read_bytes()
    assert capsys.readouterr().err == ""


def test_command_line_force_and_default_timeout(served_svhn, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["download", "svhn", "--data-dir", str(data)]) == 0
    (data / "svhn" / "train_32x32.mat").write_bytes(b"a local copy")
    assert main(["download", "svhn", "--data-dir", str(data)]) == 0
    assert (data / "svhn" / "train_32x32.mat").read_bytes() == b"a local copy"
    assert main(["download", "svhn", "--data-dir", str(data), "--force"]) == 0
    assert (data / "svhn" / "train_32x32.mat").read_bytes() == (served_svhn / "train_32x32.mat").read_bytes()
    capsys.readouterr()
    closed = tuple(dataclasses.replace(s, url=f"http://127.0.0.1:{_closed_port()}/{s.filename}")
                   for s in catalog.INFO["svhn"].sources)
    catalog.INFO["svhn"] = dataclasses.replace(catalog.INFO["svhn"], sources=closed)  # undone by the fixture
    assert main(["download", "svhn", "--data-dir", str(tmp_path / "other")]) == 1
    err = capsys.readouterr().err
    assert "(timeout 30 s): [Errno 111] Connection refused" in err  # the documented default, and the reason
    assert main(["download", "svhn", "--data-dir", str(tmp_path / "other"), "--timeout", "2.5"]) == 1
    assert "(timeout 2.5 s)" in capsys.readouterr().err


def test_command_line_help_and_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["download", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("dataset to fetch", f"target folder (default ${catalog.ENV_VAR} or the project's data/)",
                   "seconds before a stalled connection fails", "download again even if the files exist"):
        assert re.search(rf"(?<![A-Za-z]){re.escape(phrase)}(?![A-Za-z])", text), phrase
    for name in ("digits", "no-such-set"):  # digits ships with scikit-learn: nothing to download
        with pytest.raises(SystemExit) as exc:
            main(["download", name])
        assert exc.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def _archive(members: dict[str, bytes], links: dict[str, str] = {}) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


@pytest.fixture
def served_archive(local_server, monkeypatch):
    """Serves a CIFAR-10 archive built by the test (``serve(bytes)``), the catalogue pointed at it."""
    served, url = local_server

    def serve(payload: bytes) -> None:
        (served / "cifar-10-python.tar.gz").write_bytes(payload)
        source = catalog.Source(url + "cifar-10-python.tar.gz", "cifar-10-python.tar.gz", _md5(payload))
        monkeypatch.setitem(catalog.INFO, "cifar10", dataclasses.replace(catalog.INFO["cifar10"], sources=(source,)))

    return serve


@pytest.fixture
def renames(tmp_path, monkeypatch):
    """(the system's temporary folder, made empty; the sources of every os.replace, recorded as they happen)."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(system_tmp))
    moved = []
    real_replace = os.replace

    def spy(src, dst):
        moved.append(Path(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    return system_tmp, moved


FOLDER = "cifar-10-batches-py"


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="the data filter came with Python 3.11.4")
def test_archive_unpacks_only_its_folder_through_a_temporary_folder_beside_the_data(
        served_archive, tmp_path, renames):
    served_archive(_archive({f"{FOLDER}/batches.meta": b"meta", "elsewhere/evil.txt": b"not this"},
                            links={f"{FOLDER}/readme": "batches.meta", "elsewhere/passwd": "/etc/passwd"}))
    root = tmp_path / "data"
    system_tmp, moved = renames
    download("cifar10", root, progress=False)
    # not the archive's other folder, whose link out of it is not even looked at (the filter would refuse it)
    assert sorted(p.name for p in root.iterdir()) == [FOLDER]
    # the link inside the folder is kept (the data filter allows it; the older fallback drops links)
    assert (root / FOLDER / "readme").is_symlink() and (root / FOLDER / "readme").read_bytes() == b"meta"
    # every file came through a temporary folder in the data root, so its rename stays on one filesystem
    assert moved and all(p.is_relative_to(root) for p in moved)
    assert list(system_tmp.iterdir()) == []


def test_archive_forced_again_over_an_earlier_copy(served_archive, tmp_path):
    served_archive(_archive({f"{FOLDER}/batches.meta": b"first"}))
    root = tmp_path / "data"
    download("cifar10", root, progress=False)
    served_archive(_archive({f"{FOLDER}/batches.meta": b"second"}))
    download("cifar10", root, progress=False, force=True)  # the folder exists already: unpacked into it
    assert (root / FOLDER / "batches.meta").read_bytes() == b"second"
    assert sorted(p.name for p in root.iterdir()) == [FOLDER]



@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="the data filter came with Python 3.11.4")
def test_archive_with_a_link_out_of_its_folder_is_refused(served_archive, tmp_path):
    served_archive(_archive({f"{FOLDER}/batches.meta": b"meta"}, links={f"{FOLDER}/passwd": "/etc/passwd"}))
    root = tmp_path / "data"
    with pytest.raises(tarfile.FilterError):
        download("cifar10", root, progress=False)
    assert list(root.iterdir()) == []  # neither the archive nor a partial folder


def test_fetch_defaults_messages_and_temporary_file(tricky_server, tmp_path, renames, capsys):
    out = tmp_path / "out"
    system_tmp, moved = renames
    fetch(tricky_server + "payload", out / "file", _md5(PAYLOAD))  # progress on by default: a bar in bytes
    assert [p.parent for p in moved] == [out]  # written beside its destination, then renamed
    err = capsys.readouterr().err
    assert "file: 100%" in err and "5.12k/5.12k [" in err and "?B/s]" in err
    with pytest.raises(ValueError, match="deadline must be a positive number"):
        fetch(tricky_server + "payload", out / "x", _md5(PAYLOAD), progress=False, deadline=0)
    with pytest.raises(DownloadError, match=re.escape("(a plain http download can be altered on its way)") + "$"):
        check_url("http://example.org/x")
    with pytest.raises(ChecksumError, match="corrupt or was tampered with, nothing was written$"):
        fetch(tricky_server + "payload", out / "x", "f" * 32, progress=False)
    with pytest.raises(DownloadError, match="allowed for x: it announces 5,120 bytes; refused: it is not the "
                                            "file expected, and nothing was written$"):
        fetch(tricky_server + "payload", out / "x", _md5(PAYLOAD), progress=False, max_bytes=100)
    with pytest.raises(DownloadError, match=r"bytes in the 1e-06 s allowed for the whole file \(deadline\); "
                                            "refused: it is not the file expected"):
        fetch(tricky_server + "endless", out / "x", "0" * 32, progress=False, deadline=1e-6)
    with pytest.raises(DownloadError, match=r"\(timeout 30 s\): \[Errno 111\] Connection refused"):
        fetch(f"http://127.0.0.1:{_closed_port()}/x", out / "x", "0" * 32, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["file"] and list(system_tmp.iterdir()) == []


def test_a_stalled_read_names_its_reason(tmp_path):
    with socket.socket() as server:  # listens, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with pytest.raises(DownloadError, match=r"\(timeout 0.3 s\): timed out\."):
            fetch(f"http://127.0.0.1:{server.getsockname()[1]}/x", tmp_path / "x", "0" * 32, timeout=0.3,
                  progress=False)
