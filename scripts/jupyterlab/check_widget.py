"""The notebook widget in a real JupyterLab: `make check-jupyterlab` (not part of `make test`).

Starts JupyterLab from scripts/jupyterlab/.venv (setup.sh) on a free loopback port with a token, its kernel this
script's Python (the product's .venv, registered as a kernelspec in a temporary JUPYTER_DATA_DIR), opens
widget.ipynb in Debian's Chromium (Playwright), runs all cells, waits for the widget's routes graph, moves its
threshold slider with the mouse, and checks that the number of drawn edges equals `tr.routes(threshold).edges`,
computed here on the same tiny model, before and after. Saves a screenshot of the page (docs/img/widget-jupyterlab.png
by default). Exits 0 when every check holds, 1 with one line per failed check otherwise.

    .venv/bin/python scripts/jupyterlab/check_widget.py [--screenshot PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM = "/usr/bin/chromium"
PROMPT = "w1 w2 w3 w1 w5 w6 w7 w2"  # widget.ipynb's
THRESHOLD = 0.04  # flowroutes.widget's default
WAIT_MS = 300_000  # the kernel imports torch and transformers before the first cell answers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def jupyter_dirs(tmp: Path) -> dict[str, str]:
    """Environment variables that keep every Jupyter file of the run in `tmp`: the kernelspec of this Python, the
    settings (no news or update checks), the runtime files and workspaces."""
    data = tmp / "data"
    spec = data / "kernels" / "flowroutes"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "flowroutes (.venv)", "language": "python",
        "env": {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]), "HF_HUB_OFFLINE": "1"},
    }))
    settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return {"JUPYTER_DATA_DIR": str(data), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "HF_HUB_OFFLINE": "1"}


def wait_for_server(url: str, token: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"JupyterLab stopped at start (exit {server.returncode}); its log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    sys.exit(f"JupyterLab did not answer on {url} within 120 s; its log:\n{log.read_text()[-3000:]}")


def stop_server(url: str, token: str, server: subprocess.Popen) -> None:
    """Shut the server and its kernel down through the API; terminate it if it does not stop."""
    try:
        req = urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).close()
        server.wait(timeout=30)
    except (urllib.error.URLError, ConnectionError, subprocess.TimeoutExpired):
        server.terminate()
        server.wait(timeout=30)


def expected_edges() -> tuple[object, int]:
    """The notebook's trace, made here the same way (tests/helpers/models.py is seeded), and its edge count at the
    widget's default threshold."""
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    import flowroutes
    from tests.helpers.models import tiny_llama, word_tokenizer

    tr = flowroutes.trace(flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer()), PROMPT)
    return tr, len(tr.routes(THRESHOLD).edges)


KERNEL = "flowroutes (.venv)"  # the kernelspec's display name (jupyter_dirs)


def open_notebook(page, url: str, token: str) -> None:
    """Open widget.ipynb from the file browser once the launcher lists this kernel (a notebook opened before the
    kernelspecs load asks for a kernel: then pick this one), and wait for the kernel to be idle."""
    page.goto(f"{url}/lab?token={token}")
    page.locator(".jp-LauncherCard", has_text=KERNEL).first.wait_for(timeout=WAIT_MS)
    page.locator(".jp-DirListing-item", has_text="widget.ipynb").dblclick()
    ready = (f"document.querySelector('.jp-NotebookPanel-toolbar')?.textContent.includes({json.dumps(KERNEL)}) && "
             "document.querySelector(\".jp-NotebookPanel-toolbar [data-status='idle']\") !== null")
    deadline = time.monotonic() + WAIT_MS / 1000
    while not page.evaluate(ready):
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and "Select Kernel" in dialog.inner_text():
            dialog.locator("select").select_option(label=KERNEL)
            dialog.locator("button", has_text="Select").click()
        if time.monotonic() > deadline:
            sys.exit(f"the notebook's kernel ({KERNEL}) was not idle within {WAIT_MS // 1000} s")
        page.wait_for_timeout(250)


def run_all(page) -> None:
    """Run > Run All Cells, again while no cell has started: a click before the kernel's session is wired up
    runs nothing."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(10):
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        try:
            page.wait_for_function("[...document.querySelectorAll('.jp-InputPrompt')]"
                                   ".some((e) => /\\[[*0-9]+\\]/.test(e.textContent))", timeout=20_000)
            return
        except PlaywrightTimeout:
            continue
    sys.exit("JupyterLab ran no cell after 10 tries of Run > Run All Cells")


def drive(url: str, token: str, screenshot: Path, tr, n_default: int) -> list[str]:
    """Run the notebook in Chromium and check the widget; the failed checks, one line each."""
    from playwright.sync_api import sync_playwright

    failed = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        open_notebook(page, url, token)
        run_all(page)
        widget = page.locator(".jp-OutputArea-output .flowroutes-widget")
        widget.locator("svg.routes").wait_for(timeout=WAIT_MS)
        # the kernel's own count (the first code cell's value), the drawn edges and the independent count agree
        kernel_says = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output").inner_text().strip()
        drawn = widget.locator("svg.routes .edge").count()
        if not kernel_says == str(n_default) == str(drawn):
            failed.append(f"at tau={THRESHOLD}: the kernel says {kernel_says} edges, {drawn} are drawn, "
                          f"{n_default} expected")
        # the slider, moved with the mouse to a quarter of its length: the kernel recomputes, the cell redraws
        before = int(widget.get_attribute("data-renders") or 0)
        slider = widget.locator(".fw-threshold")
        box = slider.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2)
        page.wait_for_function(
            "([el, n]) => Number(el.dataset.renders) > n", arg=[widget.element_handle(), before], timeout=WAIT_MS)
        tau = float(slider.input_value())
        n_new = len(tr.routes(tau).edges)
        drawn = widget.locator("svg.routes .edge").count()
        shown = widget.locator(".fw-threshold-value").inner_text()
        status = widget.locator(".fw-status").inner_text()
        if tau == THRESHOLD:
            failed.append(f"the slider did not move (still {tau})")
        if drawn != n_new or shown != f"{tau:.3f}" or status != f"{len(tr.routes(tau).nodes)} nodes, {n_new} edges":
            failed.append(f"at tau={tau}: {drawn} edges drawn, the widget says '{shown}' and '{status}', "
                          f"{n_new} edges expected")
        print(f"tau {THRESHOLD}: {n_default} edges (kernel {kernel_says}); slider moved to tau {tau}: {drawn} edges "
              f"drawn, tr.routes({tau}) has {n_new}")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        tmp = screenshot.with_name(f".{screenshot.stem}.tmp.png")
        page.screenshot(path=str(tmp))
        os.replace(tmp, screenshot)
        print(f"wrote {screenshot} (Chromium {browser.version})")
        failed += [f"page error: {e}" for e in errors]
        browser.close()
    return failed


def versions(lab_python: Path) -> str:
    """The versions that met: the server's front ends and the kernel's packages."""
    from importlib.metadata import version

    lab = ("jupyterlab", "anywidget", "jupyterlab_widgets")
    code = f"from importlib.metadata import version; print(' '.join(version(p) for p in {lab!r}))"
    found = subprocess.run([str(lab_python), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    kernel = ", ".join(f"{p} {version(p)}" for p in ("ipykernel", "anywidget", "ipywidgets"))
    return (f"JupyterLab {found[0]} (anywidget {found[1]}, jupyterlab_widgets {found[2]}); kernel {sys.executable} "
            f"(Python {sys.version.split()[0]}, {kernel})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "img" / "widget-jupyterlab.png")
    parser.add_argument("--lab-venv", type=Path, default=HERE / ".venv")
    args = parser.parse_args()
    jupyter = args.lab_venv / "bin" / "jupyter"
    if not jupyter.exists():
        sys.exit(f"no JupyterLab at {jupyter}: run bash scripts/jupyterlab/setup.sh first")
    if not os.path.exists(CHROMIUM):
        sys.exit(f"no Chromium at {CHROMIUM}: run make browser")
    try:
        import ipykernel  # noqa: F401  (the kernel is this Python)
    except ImportError:
        sys.exit(f"{sys.executable} has no ipykernel: pip install -c requirements.lock ipykernel")
    tr, n_default = expected_edges()
    with tempfile.TemporaryDirectory(prefix="flowroutes-jupyterlab-") as name:
        tmp = Path(name)
        notebooks = tmp / "notebooks"
        notebooks.mkdir()
        shutil.copy(HERE / "widget.ipynb", notebooks)  # JupyterLab may save it: the repository's copy stays as is
        port, token = free_port(), secrets.token_hex(16)
        url = f"http://127.0.0.1:{port}"
        log = tmp / "jupyterlab.log"
        env = {**os.environ, **jupyter_dirs(tmp)}
        with open(log, "w") as out:
            server = subprocess.Popen(
                [str(jupyter), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                 "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                 f"--ServerApp.root_dir={notebooks}", *(["--allow-root"] if os.geteuid() == 0 else [])],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_server(url, token, server, log)
            failed = drive(url, token, args.screenshot, tr, n_default)
        finally:
            stop_server(url, token, server)
    print(versions(args.lab_venv / "bin" / "python"))
    for line in failed:
        print(f"FAILED: {line}")
    print("the widget works in JupyterLab" if not failed else f"{len(failed)} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
