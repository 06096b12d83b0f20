"""Take the README's screenshots of the web UI and the duplicates report, in headless Chromium (Debian's `chromium`).

    python scripts/screenshot_web.py [--out docs] [--query "a red star"]

Indexes sample_data/shapes and sample_data/photos with the bundled tiny model into two temporary libraries,
serves each on a free loopback port and saves, once the thumbnails on screen have loaded:
screenshot-search.png (light and -dark, desktop and -phone at 375 px), screenshot-browse.png (no query,
filters open), screenshot-image.png (a result), screenshot-info.png, screenshot-dedup-web.png and
screenshot-dedup-report.png (the HTML report of `clipsearch dedup --html`).
"""
from __future__ import annotations

import argparse
import socket
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote_plus

import uvicorn
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from clipsearch import Library, model_spec
from clipsearch.reports import write_html
from clipsearch.webapp import create_app

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
THUMBNAILS_LOADED = ("[...document.querySelectorAll('img')].filter(i => i.getBoundingClientRect().top < innerHeight)"
                     ".every(i => i.complete && i.naturalWidth > 0)")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}


@contextmanager
def serving(folder: Path, tmp: Path) -> Iterator[tuple[str, Library]]:
    """`folder` indexed into a library under `tmp`, served on a free loopback port: (its URL, the library)."""
    with Library.open(tmp / folder.name, create=True) as lib:
        lib.index([folder], model=model_spec("clipsearch-tiny"), device="cpu")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = uvicorn.Server(uvicorn.Config(create_app(lib), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", lib
        finally:
            server.should_exit = True
            thread.join()
            sock.close()


def save(page: Page, path: Path) -> None:
    """A screenshot as an 8-bit palette PNG, to keep it small."""
    page.wait_for_function(THUMBNAILS_LOADED)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.screenshot(path=str(path))
    Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(path, path.stat().st_size, "bytes")


def shapes_pages(browser: Browser, url: str, query: str, out: Path) -> None:
    """The search page in light and dark, on a desktop and a phone; browsing with the filters open."""
    for name, viewport in [("", DESKTOP), ("-phone", PHONE)]:
        for scheme in ["light", "dark"]:
            page = browser.new_page(viewport=viewport, color_scheme=scheme)
            page.goto(f"{url}/?q={quote_plus(query)}")
            page.wait_for_selector("#results .card .score")
            save(page, out / f"screenshot-search{name}{'-dark' if scheme == 'dark' else ''}.png")
            page.close()
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{url}/?ext=png")
    page.wait_for_selector("#results .card")
    save(page, out / "screenshot-browse.png")
    page.close()


def photos_pages(browser: Browser, url: str, lib: Library, tmp: Path, out: Path) -> None:
    """A result's page, the library page, and the duplicates as the web page and as the HTML report."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/")
    page.locator("#results .card").first.click()
    page.wait_for_selector("#detail #path")
    page.wait_for_function("document.querySelector('#detail .large img').naturalWidth > 0")
    save(page, out / "screenshot-image.png")
    page.goto(f"{url}/info")
    page.wait_for_selector("#info")
    save(page, out / "screenshot-info.png")
    page.goto(f"{url}/duplicates")
    page.wait_for_selector(".group .card")
    save(page, out / "screenshot-dedup-web.png")
    write_html(lib.duplicates(series_threshold=0.88), tmp / "report.html")
    page.goto((tmp / "report.html").as_uri())
    page.locator("#group-1 input.keep").nth(1).check()  # what a user does: pick another keeper
    page.evaluate("window.scrollTo(0, 0)")
    save(page, out / "screenshot-dedup-report.png")
    page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="a red star")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        with serving(ROOT / "sample_data" / "shapes", Path(tmp)) as (url, _):
            shapes_pages(browser, url, args.query, args.out)
        with serving(ROOT / "sample_data" / "photos", Path(tmp)) as (url, lib):
            photos_pages(browser, url, lib, Path(tmp), args.out)
        browser.close()


if __name__ == "__main__":
    main()
