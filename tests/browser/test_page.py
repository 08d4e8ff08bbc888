"""The phone page in a real browser: Debian's Chromium driven by Selenium
through chromedriver, against the real `fruits serve` binary on loopback.

A photo is chosen in the page's file input (as a phone's camera or gallery
would hand it over), the Identify button is clicked, and the answer the
page shows must be the one the API gives for the same bytes. A screenshot
is saved under target/test-output/browser/.
"""
import json
import os
import pathlib
import shutil
import subprocess
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

REPO = pathlib.Path(__file__).resolve().parents[2]
FRUITS = os.environ.get("FRUITS_BIN", str(REPO / "target/debug/fruits"))
SAMPLE = REPO / "tests/data/fruits-360-sample"
OUTPUT = REPO / "target/test-output/browser"


def browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        # Loud, not a skip: .ci/run installs both.
        raise RuntimeError("Chromium and chromedriver are needed "
                           "(Debian: apt-get install chromium chromium-driver; .ci/run does it)")
    return chromium, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("page")
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9")
    subprocess.run([FRUITS, "demo", "--weights", "random:7", "--output", str(work / "demo")],
                   check=True, capture_output=True, env=env)
    proc = subprocess.Popen([FRUITS, "serve", "--index", str(work / "demo/index"), "--addr", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    assert "http://" in line, line + proc.stderr.read()
    url = line.split("http://")[1].split()[0]
    yield f"http://{url}"
    proc.terminate()
    assert proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def driver():
    chromium, chromedriver = browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=412,915"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(chromedriver), options=opts)
    yield d
    d.quit()


def api_answer(base, photo):
    req = urllib.request.Request(f"{base}/v1/identify", data=photo.read_bytes(), headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


@pytest.mark.parametrize("fruit", ["Kiwi", "Orange"])
def test_upload_through_the_page_shows_the_answer(server, driver, fruit):
    photo = SAMPLE / f"Test/{fruit}/f0_100.jpg"
    want = api_answer(server, photo)
    driver.get(server + "/")
    assert "Fruits!" in driver.title
    driver.find_element(By.ID, "photo").send_keys(str(photo))
    driver.find_element(By.ID, "identify").click()
    shown = WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "fruit"))).text
    OUTPUT.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(OUTPUT / f"page-{fruit}.png"))
    if want["unknown"]:
        assert shown == "Unknown fruit"
    else:
        info = want["info"]
        assert info["common_name"] in shown, (shown, want)
        assert info["scientific_name"] in driver.find_element(By.ID, "info").text
    top = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#top li")]
    assert [t["label"] for t in want["top"]] == [t.split(" — ")[0].strip() for t in top], (top, want["top"])
    assert f"{round(100 * want['score'])}%" in driver.find_element(By.ID, "score").text


def test_a_file_that_is_no_photo_shows_the_reason(server, driver, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    driver.get(server + "/")
    driver.find_element(By.ID, "photo").send_keys(str(bad))
    driver.find_element(By.ID, "identify").click()
    alert = WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result [role=alert]")))
    assert "not a known image format" in alert.text
    assert not driver.find_element(By.ID, "preview").is_displayed(), "no broken preview for a file that is no image"
    driver.save_screenshot(str(OUTPUT / "page-error.png"))
