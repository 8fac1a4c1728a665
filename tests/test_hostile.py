"""Hostile inputs: files in runs/, grids, data files and servers that must not stop the lab, leak a file or
write outside the runs folder.  Each test names the problem it guards (the numbers of the audit)."""
from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import math
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qmlnb.data.catalog import CorruptDataError
from qmlnb.data.download import DownloadError, fetch
from qmlnb.data.readers import read_idx

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- 14: data files, slow servers, the papermill runner
def test_idx_header_whose_shape_overflows_int64_is_corrupt_data(tmp_path):
    # four sizes of 2**16 multiply to 2**64: in int64 that wraps to 0, which an empty payload "matches"
    path = tmp_path / "images-idx4-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 4]) + struct.pack(">4I", 1 << 16, 1 << 16, 1 << 16, 1 << 16))
    with pytest.raises(CorruptDataError, match="payload is 0 bytes"):
        read_idx(path, 4)
    gz = tmp_path / "big.gz"
    gz.write_bytes(gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1)))
    with pytest.raises(CorruptDataError, match="needs"):
        read_idx(gz, 3)


@contextlib.contextmanager
def _trickle_server(interval: float, count: int):
    """An http.server on 127.0.0.1 only that sends a body of ``count`` bytes, one every ``interval`` s."""
    stop = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(count))
            self.end_headers()
            for _ in range(count):
                if stop.wait(interval):
                    return
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/file"
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_fetch_has_a_total_deadline_against_a_trickling_server(tmp_path):
    # one byte every 0.2 s: every read comes well within timeout=2, so only a total deadline stops it
    with _trickle_server(0.2, 200) as url:
        start = time.monotonic()
        with pytest.raises(DownloadError, match="deadline"):
            fetch(url, tmp_path / "file", "0" * 32, timeout=2, deadline=1.5, progress=False)
        assert time.monotonic() - start < 8
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="deadline must be a positive number"):
        fetch("https://example.org/x", tmp_path / "file", "0" * 32, deadline=0, progress=False)


def test_papermill_run_with_bad_json_parameters_says_so_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "qmlnb.lab.papermill_run", "in.ipynb", "out.ipynb", "--cwd", ".",
                           "-y", "{bad"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "-y must be a JSON object" in proc.stderr


# ---------------------------------------------------------------- 12: states_torch checks the angles like states()
def test_states_torch_refuses_angles_that_overflow():
    pytest.importorskip("torch", reason="states_torch simulates with torch")
    from qmlnb.kernels import FeatureMap
    from qmlnb.kernels.states_torch import states_torch

    fm = FeatureMap(n_qubits=3, reps=2)
    X = np.zeros((2, 3))
    X[1, 2] = 1e154
    with pytest.raises(ValueError, match="overflow float64"):
        fm.states(X)
    with pytest.raises(ValueError, match="overflow float64"):
        states_torch(fm, X, "cpu")
    assert np.isfinite(states_torch(fm, X[:1], "cpu").numpy()).all()


# ---------------------------------------------------------------- 6, 7: grids
from test_sweep import grid_file, toy  # noqa: E402,F401 - the fast toy notebook and grid writer of the sweep tests


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_grid_refuses_nan_and_infinities(tmp_path, toy, value):  # noqa: F811 - toy is the fixture
    from qmlnb.lab import sweep

    # JSON has no NaN: status.json would record null, the point would never count as done and rerun every sweep
    with pytest.raises(sweep.SweepError, match="NaN or an infinity"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"scale": [0.5, value]}))
    with pytest.raises(sweep.SweepError, match="NaN or an infinity"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"sizes": [[1, value]]}))


def test_grid_product_is_counted_before_it_is_built(tmp_path, toy, monkeypatch):  # noqa: F811
    from qmlnb.lab import grid, sweep

    # the stated limit (here lowered, so the check is cheap) holds for a product and for a list of grids
    monkeypatch.setattr(grid, "MAX_POINTS", 1000, raising=False)
    with pytest.raises(sweep.SweepError, match="more than the 1,000"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"a": list(range(10)), "scale": [0.5 + i for i in range(10)],
                                                   "threads": list(range(11))}))
    with pytest.raises(sweep.SweepError, match="more than the 1,000"):
        sweep.load_sweep(grid_file(tmp_path, toy, [{"a": list(range(600))}, {"threads": list(range(600))}]))
    assert len(sweep.load_sweep(grid_file(tmp_path, toy, {"a": list(range(10)), "threads": list(range(10))})).points) == 100
    monkeypatch.undo()
    # 9 keys x 10 values in a 10-line YAML: 10**9 points, refused at once instead of a MemoryError a minute later
    start = time.monotonic()
    with pytest.raises(sweep.SweepError, match="1,000,000,000 points"):
        sweep.load_sweep(grid_file(tmp_path, toy, {f"k{i}": list(range(10)) for i in range(9)}))
    assert time.monotonic() - start < 5
