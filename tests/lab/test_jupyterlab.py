"""The notebooks as a person meets them: `make lab`'s JupyterLab, driven in headless Chromium.

The server starts with the options `make lab` gives it (read from `make -n lab`), on a free loopback port with
a token, serving a copy of notebooks/ (so nothing the browser does can write into the repository's notebooks).
Chromium is driven over the Chrome DevTools protocol (a websocket, `websocket-client`): it opens
00-explore.ipynb, runs every cell, clicks the explorer's "Run Interact" button and checks that the widgets are
DOM widgets (not their text repr) and that the kernel heatmap image appeared; then it runs 10-train-qcnn.ipynb
with its defaults. Both notebooks run in a working directory outside the project, and their interactive run
folders must appear under the project's runs/interactive/. Every process started here (the server, its
kernels, Chromium and its helpers) is stopped in the fixtures' teardown, also when a check fails, and the
teardown fails the test if any of them survives.
"""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import matplotlib.image
import numpy as np
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)
NO_CHROMIUM = (f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on PATH): install Debian's "
               "`chromium` package (.ci/run does) to run the JupyterLab browser test")


# ------------------------------------------------------------------ processes
def free_port() -> int:
    """A loopback port nobody listens on now (the server gets port_retries=0, so a race fails loudly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie waiting for a parent that does not reap it counts as gone)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def stop_tree(proc: subprocess.Popen, grace: float = 5.0) -> list[str]:
    """Stop ``proc``, its process group and every descendant; returns the ones still alive (should be none).

    Jupyter starts each kernel in a session of its own, so killing the server's process group alone would
    leave kernels behind: the descendants are listed before anything is signalled.
    """
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with_group = [proc.pid] if proc.poll() is None else []
        for pgid in with_group:
            try:
                os.killpg(pgid, sig)  # started with start_new_session: its group id is its pid
            except ProcessLookupError:
                pass
        for p in _alive(procs):
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + wait
        while _alive(procs) and time.monotonic() < deadline:
            proc.poll()  # reap our own child
            time.sleep(0.1)
        if not _alive(procs):
            break
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    return [f"{p.pid} {' '.join(p.cmdline()[:3])}" for p in _alive(procs)]


# ---------------------------------------------------------------- the server
def make_lab_command(port: int, data_dir: str | None = None) -> list[str]:
    """The command `make lab` runs, as an argument list (environment assignments, the executable, options).

    Run without a display and, unless ``data_dir`` is given, without ``QMLNB_DATA_DIR``.
    """
    if shutil.which("make") is None:
        pytest.skip("make is not installed: `make lab` cannot be read")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QMLNB_DATA_DIR")}
    if data_dir is not None:
        env["QMLNB_DATA_DIR"] = data_dir
    # -o: the set-up stamp counts as up to date, so only the lab's own command is printed
    out = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "lab", f"LAB_PORT={port}"], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=True).stdout
    return shlex.split(out.replace("\\\n", " "))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab with `make lab`'s options on a free port and a token, serving a copy of notebooks/."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    # symlinks followed: 90-summary.ipynb is a link into the package
    shutil.copytree(ROOT / "notebooks", root, symlinks=False)
    port, token = free_port(), secrets.token_hex(16)
    cmd = make_lab_command(port)
    # the kernels find data/ and runs/ by themselves, as in a person's lab (no sweep's or user's settings)
    env = {k: v for k, v in os.environ.items() if k not in ("QMLNB_DATA_DIR", "QMLNB_RUN_DIR")}
    assert cmd[:2] == [".venv/bin/jupyter", "lab"], cmd
    # the copy in place of notebooks/ as the root (Jupyter takes an option once)
    root_option = f"--ServerApp.root_dir={ROOT / 'notebooks'}"
    assert root_option in cmd, cmd
    options = [f"--ServerApp.root_dir={root}" if option == root_option else option for option in cmd[2:]]
    # this interpreter (and through PYTHONPATH this checkout) rather than .venv's, which may be another one;
    # then the token, and the app exposed to the test's JavaScript
    cmd = [sys.executable, "-m", "jupyterlab", *options, f"--IdentityProvider.token={token}",
           "--ServerApp.port_retries=0", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}"]
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"))
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{(tmp / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer in 90 s:\n{(tmp / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.25)
        yield {"base": base, "token": token, "root": root, "log": tmp / "jupyterlab.log"}
    finally:
        survivors = stop_tree(proc)
        log.close()
        assert not survivors, f"processes left behind by JupyterLab: {survivors}"


# ------------------------------------------------------------------ the browser
class DevTools:
    """One page of Chromium, driven over the Chrome DevTools protocol (JSON over a websocket)."""

    def __init__(self, ws_url: str):
        import websocket

        # no Origin header: Chromium refuses websocket clients from origins it was not told to allow
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:  # anything else is an event nobody subscribed to
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        """The JSON value of a JavaScript expression (a promise is awaited); page exceptions raise."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"JavaScript failed: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float, what: str, explain: str = "null"):
        """Poll until ``expression`` is truthy; on timeout fail with ``what`` and the value of ``explain``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}: {self.js(explain)}")

    def click(self, x: float, y: float) -> None:
        """A real left click (pressed, released) at page coordinates, as a person's mouse gives it."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left" if kind != "mouseMoved" else "none",
                      clickCount=1 if kind != "mouseMoved" else 0)

    def close(self):
        self.ws.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with its DevTools endpoint on a loopback port; one page, driven by :class:`DevTools`."""
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    pytest.importorskip("websocket", reason="websocket-client (the dev extra) drives Chromium over DevTools")
    profile = tmp_path_factory.mktemp("chromium")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
           "--disable-breakpad", "--disable-crash-reporter",
           "--window-size=1400,1000", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
           f"--user-data-dir={profile}", "about:blank"]
    log = open(profile.parent / "chromium.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    page = None
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not start its DevTools endpoint (exit {proc.poll()}): "
                            f"{(profile.parent / 'chromium.log').read_text()[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        page = DevTools(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
        # a headless window never has the focus, and JupyterLab's "current notebook" follows the focus
        page.call("Emulation.setFocusEmulationEnabled", enabled=True)
        yield page
    finally:
        if page is not None:
            page.close()
        survivors = stop_tree(proc)
        log.close()
        assert not survivors, f"processes left behind by Chromium: {survivors}"


def test_make_lab_serves_the_notebooks_on_loopback_with_a_token(lab):
    # a relative data folder is made absolute: the kernels run in notebooks/, not where make ran
    cmd = make_lab_command(12345, "relative/data")
    assert cmd[0] == f"QMLNB_DATA_DIR={ROOT / 'relative' / 'data'}" and cmd[1:] == make_lab_command(12345)
    assert cmd[1:3] == [".venv/bin/jupyter", "lab"]
    options = cmd[3:]
    assert {"--ip=127.0.0.1", "--port=12345", f"--ServerApp.root_dir={ROOT / 'notebooks'}",
            "--no-browser"} <= set(options), options  # no DISPLAY in the environment given to make
    assert ("--allow-root" in options) == (os.geteuid() == 0)
    # the `lab` fixture's server runs with these options: it lists the notebooks, to the token's holder only
    with urllib.request.urlopen(f"{lab['base']}/api/contents?token={lab['token']}", timeout=10) as response:
        listed = {item["name"] for item in json.load(response)["content"]}
    assert {"00-explore.ipynb", "10-train-qcnn.ipynb", "90-summary.ipynb"} <= listed
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{lab['base']}/api/contents", timeout=10)
    assert refused.value.code == 403


# -------------------------------------------------------------- notebook helpers
def open_lab(page: DevTools, lab: dict, name: str) -> None:
    """Load JupyterLab from its URL with ``name`` open and its kernel started."""
    page.call("Page.navigate", url=f"{lab['base']}/lab/tree/{name}?token={lab['token']}")
    page.wait("!!(window.jupyterapp && window.jupyterapp.shell)", 90, "JupyterLab to load",
              "document.title + ' | ' + document.body.innerText.slice(0, 300)")
    page.js("window.jupyterapp.restored.then(() => true)")
    wait_for_kernel(page, name)


def open_notebook(page: DevTools, name: str) -> None:
    """Open ``name`` in the running JupyterLab (as from the file browser) and wait for its kernel.

    Not by loading its URL: a page with an edited notebook asks before it unloads, which would block.
    """
    page.js(f"void window.jupyterapp.commands.execute('docmanager:open', {{path: {json.dumps(name)}}}); true")
    wait_for_kernel(page, name)


def wait_for_kernel(page: DevTools, name: str) -> None:
    page.wait(f"""(() => {{
        const w = window.jupyterapp.shell.currentWidget;
        return !!(w && w.context && w.context.path === {json.dumps(name)} && w.sessionContext.session
                  && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle');
    }})()""", 90, f"{name} to be the current notebook with an idle kernel",
              "[...window.jupyterapp.shell.widgets('main')].map(w => [w.title.label, "
              "w.sessionContext && w.sessionContext.kernelDisplayStatus])")


# the current notebook's code cells: execution count and outputs (from the model, the notebook's own record)
CELLS = """(() => {
    const w = window.jupyterapp.shell.currentWidget;
    const cells = [];
    for (let i = 0; i < w.content.model.cells.length; i++) {
        const cell = w.content.model.cells.get(i);
        if (cell.type === 'code') cells.push({count: cell.executionCount, outputs: cell.outputs.toJSON()});
    }
    return {status: w.sessionContext.session.kernel.status, cells: cells};
})()"""


def run_all(page: DevTools, timeout: float) -> list[dict]:
    """Run every cell (the Run menu's "Run All Cells"), wait until all ran, fail on any error output."""
    # not awaited: the command resolves only when every cell has run
    page.js("void window.jupyterapp.commands.execute('notebook:run-all-cells'); true")
    # done when every cell ran, or as soon as one failed (Run All stops there)
    page.wait(f"""(() => {{
        const s = {CELLS};
        return (s.status === 'idle' && s.cells.every(c => c.count !== null))
               || s.cells.some(c => c.outputs.some(o => o.output_type === 'error'));
    }})()""", timeout, "every cell to run", CELLS)
    cells = page.js(CELLS)["cells"]
    errors = [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, "a cell failed:\n" + "\n".join(
        re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(e["traceback"])) for e in errors)
    return cells


def texts(cells: list[dict]) -> str:
    """Everything the cells printed or displayed as text."""
    parts = []
    for c in cells:
        for o in c["outputs"]:
            parts.append("".join(o.get("text", "")))
            parts.append("".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


# ---------------------------------------------------------------------- tests
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_explorer_and_training_notebooks_run_in_jupyterlab(lab, browser, tmp_path):
    page, started = browser, time.time()
    open_lab(page, lab, "00-explore.ipynb")
    cells = run_all(page, 120)
    # the first run, with the notebook's defaults: its figure, once
    assert sum("image/png" in o.get("data", {}) for o in cells[1]["outputs"]) == 1, cells[1]["outputs"]
    # the interact cell displayed a widget view, which the page rendered as ipywidgets' DOM, not as text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in cells for o in c["outputs"])
    widget = page.wait("""(() => {
        const box = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-interact');
        if (!box) return null;
        const button = [...box.querySelectorAll('button')].find(b => b.textContent.trim() === 'Run Interact');
        return {selects: box.querySelectorAll('.widget-dropdown select').length,
                sliders: box.querySelectorAll('.widget-slider').length,
                numbers: box.querySelectorAll('.widget-text input[type=number]').length,
                button: !!button, images: box.querySelectorAll('img').length,
                repr: document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)').innerText.includes('interactive(children=')};
    })()""", 60, "the explorer's widgets to render", "document.querySelector('.jp-NotebookPanel') && "
                 "document.querySelector('.jp-NotebookPanel').innerText.slice(-1500)")
    # dataset, kind, entanglement, backend; qubits, samples, bandwidth; the two classes
    assert widget == {"selects": 4, "sliders": 3, "numbers": 2, "button": True, "images": 0, "repr": False}, widget
    rect = page.js("""(() => {
        const box = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-interact');
        const button = [...box.querySelectorAll('button')].find(b => b.textContent.trim() === 'Run Interact');
        button.scrollIntoView({block: 'center'});
        const r = button.getBoundingClientRect();
        return {x: r.x + r.width / 2, y: r.y + r.height / 2};
    })()""")
    page.click(rect["x"], rect["y"])
    # the heatmap: a PNG in the explorer's output that the page decoded and laid out
    image = page.wait("""(async () => {
        const img = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-interact .widget-output img');
        if (!img) return null;
        await img.decode();
        const box = img.getBoundingClientRect();
        return {width: img.naturalWidth, height: img.naturalHeight, shown: [box.width, box.height], src: img.src,
                text: img.closest('.widget-output').innerText,
                count: img.closest('.widget-output').querySelectorAll('img').length};
    })()""", 120, "the kernel heatmap after clicking Run Interact",
        "(() => { const o = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-interact "
        ".widget-output'); return o ? o.innerText.slice(-1500) : 'no output area'; })()")
    src = image.pop("src")
    assert src.startswith("data:image/png;base64,"), src[:80]
    picture = tmp_path / "explorer.png"
    picture.write_bytes(base64.b64decode(src.partition(",")[2]))  # kept for a look when a check below fails
    assert image["width"] > 300 and image["height"] > 300 and min(image["shown"]) > 100, (image, picture)
    assert image.pop("count") == 1, (image, picture)  # shown once, complete (not also half-drawn)
    # most of it in the viridis colours of the kernel matrix: the sample images and the text are grey
    rgb = (matplotlib.image.imread(picture)[..., :3] * 255).astype(int)
    colour = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2]) > 60))
    assert rgb.shape[:2] == (image["height"], image["width"]) and colour > 0.1, (colour, image, picture)
    # the circuit drawing printed above it: one wire per qubit (4 by default), each starting with a Hadamard
    assert all(f"{q}: ──H" in image["text"] for q in range(4)) and "4: ──" not in image["text"], image["text"]
    explore = ROOT / "runs" / "interactive" / "explore" / "metrics.json"
    assert explore.is_file() and explore.stat().st_mtime >= started - 1, "the explorer's run folder"

    open_notebook(page, "10-train-qcnn.ipynb")
    cells = run_all(page, 240)
    assert "sequential: 1 process(es)" in texts(cells)
    assert any("image/png" in o.get("data", {}) for c in cells for o in c["outputs"]), "the training curves"
    metrics = ROOT / "runs" / "interactive" / "qcnn" / "metrics.json"
    assert metrics.is_file() and metrics.stat().st_mtime >= started - 1, "the training run's folder"
    assert json.loads(metrics.read_text())["n_train"] > 0
    # the kernels ran in the notebooks' folder, which stays as it was: no run folder, no data there
    assert not (lab["root"] / "runs").exists() and not (lab["root"] / "data").exists()
