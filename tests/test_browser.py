"""A real browser: JupyterLab headless on localhost, Chromium driven by Selenium opens the training
notebook, runs the cells up to the widget panel, changes the backbone dropdown and sees the live
summary update. The screenshot is kept in runs/test_artifacts/. Skipped, with the reason, only
where Chromium/ChromeDriver are not installed (`make test` installs them as root via apt)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                 reason="Chromium/ChromeDriver not installed (Debian packages chromium, chromium-driver)"),
              pytest.mark.serial]  # a JupyterLab server, a kernel and a browser under wall-clock limits


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    import nbformat

    nb = nbformat.read(str(REPO / "notebooks" / "03_train.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace("dataset = ''", "dataset = 'my_dataset'").replace("output = ''", "output = 'my_run'")
    cell.source = cell.source.replace("steps_per_epoch = 0", "steps_per_epoch = 100")
    nbformat.write(nb, str(tmp_path / "train.ipynb"))
    port, token = _free_port(), "recface-test"
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
                             "--ServerApp.disable_check_xsrf=True", "--allow-root", "--LabApp.news_url=None",
                             "--LabServerApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"),
                            env={**os.environ, "JUPYTER_NO_CONFIG": "1"})
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    import urllib.request
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.time() - t0 > 60 or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield f"{url}/lab/tree/train.ipynb?token={token}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_training_panel_in_jupyterlab(lab):
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1400,1800", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    art = REPO / "runs" / "test_artifacts"
    art.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(lab)
        wait = WebDriverWait(driver, 120)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        # kernel idle before running cells
        wait.until(lambda d: "Idle" in (d.find_element(By.CSS_SELECTOR, ".jp-Toolbar").text
                                        + d.find_element(By.TAG_NAME, "body").get_attribute("innerHTML")))
        time.sleep(2)  # let the notebook settle before using the menu

        def click_text(css, text):
            def find(d):
                for e in d.find_elements(By.CSS_SELECTOR, css):
                    try:
                        if e.text.strip() == text:
                            return e
                    except Exception:  # re-rendered while looking
                        pass
                return None
            wait.until(find).click()

        click_text(".lm-MenuBar-itemLabel", "Run")
        click_text(".lm-Menu-itemLabel", "Run All Cells")  # stops at the training cell (no dataset): fine
        summary = wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, ".widget-html, .jupyter-widget-html")
                                             if "backbone parameters" in e.text), None))
        assert "MobileFaceNetV2 + ArcFace: 1.22M backbone parameters" in summary.text
        assert "100 steps per epoch" in summary.text
        # each field's help shows when its label is hovered (the title of the label's text)
        from recface_lib.train.config import TrainConfig
        label = driver.find_element(By.CSS_SELECTOR, ".recface-field-embd_shape .recface-help")
        assert label.text == "embd_shape" and label.get_attribute("title") == TrainConfig.help()["embd_shape"]
        dropdown = next(s for s in driver.find_elements(By.CSS_SELECTOR, ".widget-dropdown select, .jupyter-widget-dropdown select")
                        if "ResNet34R" in s.text)
        Select(dropdown).select_by_visible_text("ResNet34R")
        wait.until(lambda d: "ResNet34R + ArcFace: 11.77M" in summary.text)
        # the head's own fields: ArcFace's easy_margin goes, AdaFace's h and t_alpha appear
        assert driver.find_elements(By.CSS_SELECTOR, ".recface-head-param-easy_margin")
        head = next(s for s in driver.find_elements(By.CSS_SELECTOR, ".widget-dropdown select, .jupyter-widget-dropdown select")
                    if "AdaFace" in s.text and "CosFace" in s.text)
        Select(head).select_by_visible_text("AdaFace")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".recface-head-param-h")
                   and d.find_elements(By.CSS_SELECTOR, ".recface-head-param-t_alpha")
                   and not d.find_elements(By.CSS_SELECTOR, ".recface-head-param-easy_margin"))
        # the plan plot is redrawn when a plan row changes
        plot = lambda d: d.find_element(By.CSS_SELECTOR, "img.recface-plan-plot, .recface-plan-plot img").get_attribute("src")  # noqa: E731
        before = wait.until(plot)
        lr = driver.find_element(By.CSS_SELECTOR, ".recface-plan-lr input")
        lr.clear()
        lr.send_keys("0.05\n")
        wait.until(lambda d: plot(d) != before)
        driver.save_screenshot(str(art / "train_panel.png"))
        assert (art / "train_panel.png").stat().st_size > 20000
        (art / "train_panel.json").write_text(json.dumps({"summary": summary.text}))
    finally:
        driver.save_screenshot(str(art / "train_panel_last.png"))
        driver.quit()
