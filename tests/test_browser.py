"""JupyterLab in headless Chromium: notebook 00 runs from the Run menu and its viewer reacts.

Installs Chromium with apt if it is missing (skips, saying why, only if apt cannot).
Screenshots are saved to ``tests/artifacts/`` for a person to look at.
"""
from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
NOTEBOOK = "00_welcome.ipynb"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
JUPYTER = str(Path(sys.executable).with_name("jupyter"))

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _ensure_chromium() -> None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    cmd = "apt-get update -qq && apt-get install -y -qq chromium chromium-driver"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not Path(CHROMEDRIVER).exists():
        pytest.skip(f"Chromium is missing and `{cmd}` failed (rc={proc.returncode}): "
                    f"{(proc.stderr or proc.stdout).strip()[-300:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in its own process group, stopped (with its kernels) on exit."""

    def __init__(self, root: Path, *args: str, token: str | None = None):
        self.port, self.token = _free_port(), token
        env = dict(os.environ, RADLAB_PROFILE="quick", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   JUPYTER_RUNTIME_DIR=str(root.parent / "runtime"), PYDEVD_DISABLE_FILE_VALIDATION="1")
        # Fresh settings, no news pop-up over the notebook.
        settings = root.parent / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        cmd = [JUPYTER, "lab", "--no-browser", "--allow-root", f"--port={self.port}",
               "--ServerApp.ip=127.0.0.1", f"--LabApp.workspaces_dir={root.parent / 'workspaces'}",
               f"--LabApp.user_settings_dir={root.parent / 'user-settings'}", *args]
        if token is not None:
            cmd.append(f"--IdentityProvider.token={token}")
        self.log = open(root.parent / "lab.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def url(self, path: str) -> str:
        query = f"?token={self.token}" if self.token else ""
        return f"http://127.0.0.1:{self.port}/{path}{query}"

    def wait_ready(self, timeout: float = 90) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as reply:
                    import json
                    return json.loads(reply.read())
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer /api/status within {timeout} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-1500:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)   # the server and the kernels it started
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def test_make_lab_starts_jupyterlab(tmp_path):
    """`make lab` itself (venv already built by `make test`), with --no-browser on a free port, then stopped."""
    if not (ROOT / ".venv" / ".stamp-runtime").exists():
        pytest.skip("make lab needs the project's .venv built by make (run the tests through `make test`)")
    port, token = _free_port(), secrets.token_hex(8)
    args = f"--no-browser --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token} " \
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    with open(tmp_path / "lab.log", "w") as log:
        proc = subprocess.Popen(["make", "-s", "lab", f"PORT={port}", f"LAB_ARGS={args}"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, status = time.time() + 90, None
        while status is None and time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                    status = r.read().decode()
            except OSError:
                time.sleep(0.5)
        assert status is not None and "started" in status, (tmp_path / "lab.log").read_text()[-1500:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5) as r:
            assert NOTEBOOK in r.read().decode(), "make lab should open JupyterLab on notebooks/"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------- the browser run

def _driver(user_data: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1500,1300", f"--user-data-dir={user_data}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def _accept_dialog(driver) -> None:
    """Accept a modal dialog if one is open. JupyterLab asks "Select Kernel" (default: the notebook's own
    Python 3 kernel) when it opens a notebook before its list of kernels has loaded, a race on a busy machine."""
    from selenium.webdriver.common.by import By
    for button in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-Dialog-button.jp-mod-accept"):
        if button.is_displayed():
            button.click()
            time.sleep(1)


def _click_menu(driver, menu: str, item: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import ElementClickInterceptedException

    wait = WebDriverWait(driver, 30)
    label = f"//div[contains(@class,'lm-MenuBar-itemLabel') and normalize-space()='{menu}']"
    entry = f"//div[contains(@class,'lm-Menu-itemLabel') and normalize-space()='{item}']"
    for attempt in range(3):   # a dialog may open between two clicks: accept it and click again
        _accept_dialog(driver)
        try:
            wait.until(EC.element_to_be_clickable((By.XPATH, label))).click()
            wait.until(EC.element_to_be_clickable((By.XPATH, entry))).click()
            return
        except ElementClickInterceptedException:
            if attempt == 2:
                raise


def _prompts(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim());")


def _run_all_cells(driver, timeout: float) -> float:
    """Run > Run All Cells, then wait until every code cell shows an execution count; returns seconds.

    A click that lands while the kernel is still connecting queues nothing (or only the
    first cell), so when nothing is running and some cells never ran, it clicks again.
    """
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    start = last_click = time.time()
    _click_menu(driver, "Run", "Run All Cells")
    while time.time() - start < timeout:
        prompts = _prompts(driver)
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            return time.time() - start
        if "[*]:" not in prompts and time.time() - last_click > 15:
            ActionChains(driver).send_keys(Keys.ESCAPE).perform()  # close a menu left open
            _click_menu(driver, "Run", "Run All Cells")
            last_click = time.time()
        time.sleep(1)
    raise TimeoutError(f"cells still not run after {timeout} s: prompts {prompts}")


def _shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def test_notebook_00_runs_in_jupyterlab_and_viewer_reacts(tmp_path):
    if not (ROOT / "notebooks" / NOTEBOOK).exists():
        pytest.fail(f"notebooks/{NOTEBOOK} is missing")
    _ensure_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    root = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", root)
    lab = Lab(root, token=secrets.token_hex(16))
    driver = None
    try:
        lab.wait_ready()
        driver = _driver(tmp_path / "chromium-profile")
        driver.get(lab.url(f"lab/tree/{NOTEBOOK}"))
        WebDriverWait(driver, 90).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        time.sleep(2)
        _accept_dialog(driver)
        WebDriverWait(driver, 90).until(lambda d: d.execute_script(
            "const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
            "return s && s.getAttribute('data-status') === 'idle';"))
        seconds = _run_all_cells(driver, timeout=240)
        _shot(driver, "browser_00_after_run_all.png")
        errors = driver.find_elements(By.CSS_SELECTOR, ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
        assert not errors, [e.text[:300] for e in errors]

        viewer = WebDriverWait(driver, 60).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".radlab-viewer")))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", viewer)
        axial_img = viewer.find_element(By.CSS_SELECTOR, ".radlab-view-axial img")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return arguments[0].naturalWidth", axial_img) > 0)
        time.sleep(1)
        before, axial_before = viewer.screenshot_as_png, axial_img.screenshot_as_png
        (ARTIFACTS / "browser_00_viewer_before.png").write_bytes(before)
        src_before = axial_img.get_attribute("src")

        handle = viewer.find_element(By.CSS_SELECTOR, ".radlab-view-axial .noUi-handle")
        handle.click()
        for _ in range(5):
            handle.send_keys(Keys.ARROW_RIGHT)
        WebDriverWait(driver, 30).until(lambda d: axial_img.get_attribute("src") != src_before)
        time.sleep(1)
        after, axial_after = viewer.screenshot_as_png, axial_img.screenshot_as_png
        (ARTIFACTS / "browser_00_viewer_after.png").write_bytes(after)
        _shot(driver, "browser_00_after_slider.png")

        a, b = _pixels(before), _pixels(after)
        assert a.shape == b.shape, (a.shape, b.shape)
        assert a.std() > 10, "the viewer area is blank: the widget did not render"
        changed = np.abs(a - b) > 8
        assert changed.mean() > 0.002, f"moving the axial slider changed only {changed.mean():.4%} of the pixels"
        axial_changed = (np.abs(_pixels(axial_before) - _pixels(axial_after)) > 8).mean()
        assert axial_changed > 0.02, f"the axial view changed only {axial_changed:.4%} of its pixels"
        print(f"notebook 00 ran in the browser in {seconds:.0f} s; "
              f"{changed.mean():.2%} of the viewer's pixels and {axial_changed:.1%} of the axial view's changed; screenshots in {ARTIFACTS}")
    finally:
        if driver is not None:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            with_shot = ARTIFACTS / "browser_00_last.png"
            try:
                driver.save_screenshot(str(with_shot))
            finally:
                driver.quit()
        lab.stop()
