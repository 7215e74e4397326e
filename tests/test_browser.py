"""The walk-through as people use it: JupyterLab in headless Chromium, every notebook run with
Run > Run All Cells, the dataset form typed into, the workflow approved by clicking in the
approvals panel, the run followed live, the result read.

Needs chromium, chromedriver and selenium (skipped otherwise). Screenshots go to
``$NITRONB_SCREENSHOTS`` if set, else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
XSS_SCRIPT = "<script>window.__xss = 'script'; alert('script')</script>"
XSS_IMG = "<img src=x onerror=\"window.__xss = 'img'; alert('img')\">"
LONG_DESCRIPTION = f"""# Synthea conditions

| column | kept |
|---|---|
| DESCRIPTION | ~~no~~ yes |

- [x] encrypted before upload

{XSS_SCRIPT}

{XSS_IMG}
"""
WAIT = 300  # seconds for one notebook to run


def _chromium() -> tuple[str, str]:
    browser = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                    if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("the browser test needs Chromium and chromedriver "
                    "(apt-get install chromium chromium-driver)")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("NITRONB_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free port over a copy of the notebooks, in a workspace of its own;
    yields its URL and token."""
    pytest.importorskip("selenium", reason="the browser test needs selenium "
                                           "(pip install -e '.[test]')")
    _chromium()
    import requests
    from jupyter_client.kernelspec import KernelSpecManager

    from nitronb.local import stack as local

    base = tmp_path_factory.mktemp("lab")
    workspace, root, settings = base / "workspace", base / "notebooks", base / "settings"
    root.mkdir()
    kernels = KernelSpecManager().find_kernel_specs()
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        if nb["metadata"]["kernelspec"]["name"] not in kernels:  # kernel not installed here
            nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                            "language": "python"}
        (root / notebook.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False),
                                          encoding="utf-8")
    (root / "about.md").write_text(LONG_DESCRIPTION, encoding="utf-8")
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")
    # every cell in the page (no virtual scrolling): what is off screen can still be read
    notebook = settings / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True)
    (notebook / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}), encoding="utf-8")

    port, token = _free_port(), os.urandom(16).hex()
    env = {**os.environ, "NITRONB_WORKSPACE": str(workspace),
           "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "lab-workspaces"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime")}
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = open(base / "lab.log", "wb")
    local.up(workspace)
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                              cwd=str(root))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail("JupyterLab exited: " + (base / "lab.log").read_text()[-3000:])
            try:
                if requests.get(f"{url}/api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("JupyterLab did not answer within 90 s: "
                            + (base / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"url": url, "token": token, "root": root, "workspace": workspace,
               "log": base / "lab.log"}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        local.down(workspace)


@pytest.fixture(scope="module")
def browser(lab, shots, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,1100",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    # an alert must stay visible to the test (it proves a script ran), not be dismissed
    options.set_capability("unhandledPromptBehavior", "ignore")
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(60)
    try:
        yield Lab(driver, lab, shots)
    finally:
        driver.quit()


class Lab:
    """JupyterLab in the browser: what a person does (menus, typing, clicking), and a few
    looks into the page's state through ``window.jupyterapp``."""

    def __init__(self, driver, lab: dict, folder: Path) -> None:
        self.driver, self.url, self.token = driver, lab["url"], lab["token"]
        self.folder = folder

    # --- looking ---------------------------------------------------------------------------

    def js(self, script: str, *args):
        from selenium.common.exceptions import UnexpectedAlertPresentException

        try:
            return self.driver.execute_script(script, *args)
        except UnexpectedAlertPresentException as exc:
            pytest.fail(f"a script ran in the page: alert({exc.alert_text!r})")

    def wait(self, what: str, condition, timeout: float = 60, every: float = 0.25):
        """``condition()``'s first true value, asked every ``every`` s; fails after
        ``timeout`` s. Elements replaced while being read (a widget redrawn) count as not yet."""
        from selenium.common.exceptions import (StaleElementReferenceException,
                                                UnexpectedAlertPresentException)

        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except StaleElementReferenceException:
                value = None
            except UnexpectedAlertPresentException as exc:
                pytest.fail(f"a script ran in the page: alert({exc.alert_text!r})")
            if value:
                return value
            if time.monotonic() > deadline:
                shot = self.shot(f"timeout-{what.replace(' ', '-')[:40]}")
                pytest.fail(f"waited {timeout:.0f} s for {what} (the page then: {shot})")
            time.sleep(every)

    def shot(self, name: str, element=None) -> Path:
        if element is not None:
            self.js("arguments[0].scrollIntoView({block: 'center'})", element)
            time.sleep(0.3)
        path = self.folder / f"{len(list(self.folder.glob('*.png'))):02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def no_script_ran(self) -> None:
        from selenium.common.exceptions import NoAlertPresentException

        try:
            alert = self.driver.switch_to.alert
            text = alert.text
            alert.dismiss()
            pytest.fail(f"a script in the long description ran: alert({text!r})")
        except NoAlertPresentException:
            pass
        assert self.js("return window.__xss === undefined ? null : window.__xss") is None

    def notebook_state(self):
        return self.js("""
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            if (!w || !w.content || !w.sessionContext || !w.content.widgets) return null;
            const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
            const cells = w.content.widgets.filter(c => c.model.type === 'code').map(c => ({
                count: c.model.executionCount,
                prompt: (c.node.querySelector('.jp-InputPrompt') || {}).textContent || '',
                source: c.model.sharedModel.getSource(),
                errors: c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                    .map(o => ({ename: o.ename, evalue: o.evalue,
                                traceback: o.traceback}))}));
            return {status: kernel ? kernel.status : null, cells: cells,
                    path: w.context.path};""")

    # --- doing -----------------------------------------------------------------------------

    def open(self, name: str) -> None:
        """Open a notebook (as from the file browser) and wait for its kernel."""
        if not self.js("return !!window.jupyterapp"):
            self.driver.get(f"{self.url}/lab?token={self.token}")
            self.wait("JupyterLab to start", lambda: self.js(
                "return !!(window.jupyterapp && window.jupyterapp.shell)"), timeout=120)
            self.js("return window.jupyterapp.restored.then(() => true)")
            self.wait("JupyterLab's commands", lambda: self.js(
                "return ['docmanager:open', 'notebook:run-all-cells'].every("
                "c => window.jupyterapp.commands.hasCommand(c))"), timeout=120)
        self.js("return window.jupyterapp.commands.execute('docmanager:open', "
                "{path: arguments[0]}).then(() => true)", name)
        self.wait(f"{name} to open with an idle kernel", lambda: (
            (state := self.notebook_state()) and state["path"] == name
            and state["status"] == "idle"), timeout=120)
        # start from a clean page: no outputs or counts from the stored notebook
        self.js("return window.jupyterapp.commands.execute("
                "'notebook:clear-all-cell-outputs').then(() => true)")

    def menu(self, menu: str, item: str) -> None:
        """Click ``menu`` in the menu bar, then ``item`` in it."""
        from selenium.webdriver.common.by import By

        bar = self.wait(f"the {menu} menu", lambda: [
            e for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
            if e.text.strip() == menu])
        bar[0].click()
        entry = self.wait(f"{menu} > {item}", lambda: [
            e for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
            if e.is_displayed() and e.find_element(
                By.CSS_SELECTOR, ".lm-Menu-itemLabel").text.strip() == item])
        entry[0].click()

    def run_all(self, name: str, *, expect_error: bool = False) -> dict:
        """Run > Run All Cells, then wait for the kernel to finish; return the notebook's
        state. Fails on an error output unless ``expect_error``."""
        self.menu("Run", "Run All Cells")
        return self.finished(name, expect_error=expect_error)

    def finished(self, name: str, *, expect_error: bool = False) -> dict:
        def done():
            state = self.notebook_state()
            if not state or state["status"] != "idle":
                return None
            cells = state["cells"]
            if any("*" in c["prompt"] for c in cells):
                return None
            errored = any(c["errors"] for c in cells)
            if errored or all(c["count"] for c in cells):
                return state
            return None

        state = self.wait(f"{name} to finish running", done, timeout=WAIT, every=0.5)
        errors = [e for c in state["cells"] for e in c["errors"]]
        if errors and not expect_error:
            self.shot(f"error-{name}")
            pytest.fail(f"{name} failed: " + "; ".join(
                f"{e['ename']}: {e['evalue']}" for e in errors))
        return state

    def close(self) -> None:
        """Shut down the current notebook's kernel and close it (no save dialog)."""
        self.js("""
            const w = window.jupyterapp.shell.currentWidget;
            return w.sessionContext.shutdown().then(() => { w.dispose(); return true; });""")

    def output_text(self) -> str:
        from selenium.webdriver.common.by import By

        return "\n".join(e.text for e in self.driver.find_elements(
            By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output"))


def _field(lab: Lab, label: str, tag: str):
    from selenium.webdriver.common.by import By

    return lab.wait(f"the form field {label}", lambda: lab.driver.find_elements(
        By.XPATH, f"//div[contains(@class,'widget-inline-hbox')]"
                  f"[./label[normalize-space()='{label}']]//{tag}"))[0]


def _buttons(lab: Lab, text: str) -> list:
    """The widget buttons labelled ``text`` (call it inside ``lab.wait``: a redrawn widget
    replaces its buttons)."""
    from selenium.webdriver.common.by import By

    return [b for b in lab.driver.find_elements(By.CSS_SELECTOR, "button.jupyter-button")
            if b.text.strip() == text and b.is_displayed()]


def _click(lab: Lab, text: str) -> None:
    lab.wait(f"a {text} button", lambda: _buttons(lab, text))[0].click()


def test_the_walkthrough_in_jupyterlab(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    for name in ("01_generate_keys", "02_encrypt_input", "03_upload_and_presign"):
        browser.open(f"{name}.ipynb")
        browser.run_all(name)
        if name == "01_generate_keys":
            browser.shot(name)
        browser.close()

    # 04: the dataset form, typed into as a data owner would
    browser.open("04_create_datasets.ipynb")
    browser.run_all("04")
    source = _field(browser, "Load from", "input")
    source.click()
    source.send_keys("missing.md")
    _click(browser, "Load")
    message = browser.wait("the form's error for a missing file", lambda: [
        e for e in browser.driver.find_elements(By.CSS_SELECTOR, ".widget-html")
        if "there is no file missing.md" in e.text])
    assert message
    long_description = _field(browser, "Long description", "textarea")
    assert long_description.get_attribute("value") == ""
    assert source.get_attribute("value") == "missing.md"
    source.send_keys(Keys.CONTROL, "a")
    source.send_keys("about.md")
    _click(browser, "Load")
    browser.wait("the preview of the loaded long description", lambda: browser.driver
                 .find_elements(By.XPATH, "//h1[normalize-space()='Synthea conditions']"))
    assert "window.__xss" in long_description.get_attribute("value")
    long_description.send_keys(Keys.CONTROL, Keys.END)
    long_description.send_keys(f"\n\n{XSS_IMG}\n\ntyped by hand\n")
    browser.wait("the preview to follow the typing", lambda: browser.driver.find_elements(
        By.XPATH, "//p[normalize-space()='typed by hand']"))
    time.sleep(1)  # an image that fails to load fires onerror at once; give it the chance
    browser.no_script_ran()
    preview = browser.driver.find_element(
        By.XPATH, "//h1[normalize-space()='Synthea conditions']/..")
    inner = preview.get_attribute("innerHTML")
    assert "<table>" in inner and "<s>no</s>" in inner and 'type="checkbox"' in inner
    assert "<script" not in inner and "onerror" not in inner
    browser.shot("04-dataset-form", preview)
    browser.close()

    for name in ("05_build_enclave_image", "06_app_and_configuration"):
        browser.open(f"{name}.ipynb")
        browser.run_all(name)
        browser.close()

    # 07: a trainer sets approve_in_panel = True; the approvers click in the panel
    browser.open("07_workflow_and_approvals.ipynb")
    editor = browser.driver.find_elements(By.CSS_SELECTOR, ".jp-Cell .cm-content")[0]
    editor.click()
    editor.send_keys(Keys.CONTROL, Keys.END)
    editor.send_keys(Keys.ENTER, "approve_in_panel = True")
    state = browser.run_all("07", expect_error=True)
    [error] = [e for c in state["cells"] for e in c["errors"]]
    assert error["ename"] == "StepOrderError"
    assert "waiting for approvals by app-owner, data-owner, output-owner" in error["evalue"]
    shown = browser.output_text()
    assert "StepOrderError: the workflow describe-conditions version 1 is waiting" in shown
    assert "Traceback" not in shown and ".py" not in shown
    browser.shot("07-waiting-for-approvals", browser.driver.find_element(
        By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"))
    for left in (3, 2, 1):  # app-owner, data-owner, output-owner: each clicks Approve
        browser.wait(f"{left} Approve buttons in the panel",
                     lambda: len(_buttons(browser, "Approve")) == left)
        _click(browser, "Approve")
        browser.wait("the panel to take the decision",
                     lambda: len(_buttons(browser, "Approve")) == left - 1, timeout=30)
    note = browser.wait("the panel to say the workflow is approved", lambda: [
        e for e in browser.driver.find_elements(By.CSS_SELECTOR, ".widget-html")
        if "is approved; its APPCONFIG_ID is" in e.text])
    browser.wait("no Approve button left", lambda: not _buttons(browser, "Approve"))
    browser.shot("07-approved-in-the-panel", note[0])
    # run the cells after the panel again: select the picture's cell, Run Selected and Below
    browser.js("""
        const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = nb.widgets.findIndex(
            c => c.model.sharedModel.getSource().includes('workflow_picture'));""")
    browser.menu("Run", "Run Selected Cell and All Below")
    state = browser.finished("07 after the approvals")
    last = state["cells"][-1]
    assert "runtime_configuration" in last["source"] and not last["errors"]
    true = browser.wait("the APPCONFIG_ID check to say True", lambda: browser.driver
                        .find_elements(By.XPATH, "//pre[normalize-space()='True']"))
    browser.shot("07-after-the-panel", true[0])
    browser.close()

    # 08: the run monitor, live
    browser.open("08_run_workflow.ipynb")
    browser.menu("Run", "Run All Cells")
    seen = []

    def monitor_finished():
        state = browser.notebook_state()
        failed = [e for c in (state or {}).get("cells", []) for e in c["errors"]]
        if failed:
            pytest.fail(f"08 failed: {failed[0]['ename']}: {failed[0]['evalue']}")
        labels = [e.text for e in browser.driver.find_elements(
            By.XPATH, "//div[contains(@class,'widget-html')][.//b]") if e.text.strip()]
        states = [t.split(" — ")[0] for t in labels
                  if t.split(" — ")[0] in ("starting", "attesting", "provisioned",
                                           "running app", "finished", "failed", "refused")]
        if states and (not seen or seen[-1] != states[0]):
            seen.append(states[0])
            if len(seen) == 2:
                browser.shot("08-monitor-live")  # the page as it is: scrolling would be slow
        return states and states[0] in ("finished", "failed", "refused")

    browser.wait("the run monitor to end", monitor_finished, timeout=WAIT, every=0.2)
    assert seen[-1] == "finished", seen
    browser.finished("08")
    assert "credentials wiped" in browser.output_text()
    browser.shot("08-run-finished", browser.driver.find_element(
        By.CSS_SELECTOR, ".widget-html"))
    print("run monitor states seen:", " → ".join(seen))
    browser.close()

    browser.open("09_decrypt_output.ipynb")
    browser.run_all("09")
    browser.wait("the result", lambda: "Viral sinusitis" in browser.output_text())
    browser.shot("09-result", browser.driver.find_element(
        By.XPATH, "//*[contains(text(), 'Viral sinusitis')]"))
    browser.close()
    browser.no_script_ran()
