"""The explorer's site in a real browser (headless Chromium through Selenium): every
page loads without a console error and every link and picture resolves, a channel
shows 9 projections beside 9 patches, and the keys move between channels and
layers; over file:// and over HTTP."""

import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from .explorer_site import site_fixture  # noqa: F401 (the fixture `site`)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("no chromium: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium missing: pip install -e '.[dev]'"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver)
    session = webdriver.Chrome(options=options, service=service)
    session.set_page_load_timeout(60)
    yield session
    session.quit()


def errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def local(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def test_every_page_loads_without_errors_and_every_link_resolves(browser, site):
    from selenium.webdriver.common.by import By

    start = (site / "index.html").as_uri()
    seen, queue, problems = {start}, [start], []
    while queue:
        url = queue.pop()
        browser.get(url)
        problems += [f"{url}: {message}" for message in errors(browser)]
        broken = browser.execute_script(
            "return [...document.images].filter(i => i.loading !== 'lazy'"
            " && !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        problems += [f"{url}: picture {src} not shown" for src in broken]
        for img in browser.find_elements(By.TAG_NAME, "img"):
            if not local(img.get_attribute("src")).is_file():
                problems.append(f"{url}: no picture {img.get_attribute('src')}")
        for a in browser.find_elements(By.TAG_NAME, "a"):
            target = a.get_attribute("href").split("#")[0]
            if not local(target).is_file():
                problems.append(f"{url}: link to {target} leads nowhere")
            elif target not in seen:
                seen.add(target)
                queue.append(target)
    assert problems == []
    pages = {p for p in site.rglob("*.html") if "work" not in p.parts}
    assert {local(url) for url in seen} == pages  # each page reached by links


def test_a_channel_page_shows_nine_projections_and_patches_and_keys_move(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((site / "layers" / "conv1" / "0.html").as_uri())
    for kind in ("projection", "patch"):
        pictures = browser.find_elements(By.CSS_SELECTOR, f"figure.{kind} img")
        assert len(pictures) == 9
        assert all(p.get_property("naturalWidth") > 0 for p in pictures)
    captions = browser.find_elements(By.CSS_SELECTOR, "figure.patch figcaption")
    assert {c.text for c in captions} <= {"zero", "one", "two"}  # the labels
    grid = browser.find_elements(By.CSS_SELECTOR, "a.channel.dead")
    assert grid == []  # (conv1 has no dead channel; conv2's are checked below)

    def press(key: str, page: str) -> None:
        browser.find_element(By.TAG_NAME, "body").send_keys(key)
        WebDriverWait(browser, 10).until(lambda b: b.current_url.endswith(page))

    press(Keys.ARROW_RIGHT, "layers/conv1/1.html")
    assert browser.find_element(By.ID, "channel").text == "1"
    press(Keys.ARROW_LEFT, "layers/conv1/0.html")
    press(Keys.ARROW_DOWN, "layers/conv2/0.html")
    press("u", "layers/conv2/index.html")
    dead = browser.find_elements(By.CSS_SELECTOR, "a.channel.dead")
    assert "5" in {d.text.split()[0] for d in dead}
    assert errors(browser) == []


def test_the_site_works_over_http(browser, site):
    from selenium.webdriver.common.by import By

    handler = partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        for page in ("index.html", "layers/conv2/3.html", "images/0.html"):
            browser.get(base + page)
            shown = browser.execute_script(
                "return [...document.images].every(i => i.loading === 'lazy'"
                " || (i.complete && i.naturalWidth > 0))"
            )
            assert shown and errors(browser) == [], page
        assert browser.find_elements(By.CSS_SELECTOR, "figure.method")
    finally:
        server.shutdown()
        server.server_close()
