"""Take the README's screenshot of the search page, in headless Chromium (Debian's `chromium`).

    python scripts/screenshot_web.py [--query "a red star"] [--out docs/screenshot-search.png]

Indexes sample_data/shapes with the bundled tiny model into a temporary library, serves it on
a free loopback port, searches, and saves the page once every thumbnail has loaded.
"""
from __future__ import annotations

import argparse
import socket
import tempfile
import threading
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from clipsearch import Library, model_spec
from clipsearch.webapp import create_app

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="a red star")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot-search.png")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, Library.open(tmp, create=True) as lib:
        lib.index([ROOT / "sample_data" / "shapes"], model=model_spec("clipsearch-tiny"), device="cpu")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = uvicorn.Server(uvicorn.Config(create_app(lib), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/")
            page.fill("#q", args.query)
            page.press("#q", "Enter")
            page.wait_for_selector("#results .card")
            page.wait_for_function(  # the thumbnails on screen (the others load lazily, on scrolling)
                "[...document.querySelectorAll('#results img')].filter(i => i.getBoundingClientRect().top < innerHeight)"
                ".every(i => i.complete && i.naturalWidth > 0)")
            page.locator("#q").blur()
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
        server.should_exit = True
        thread.join()
    print(args.out)


if __name__ == "__main__":
    main()
