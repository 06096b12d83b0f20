"""Take the README's screenshots of the duplicates report (HTML) and the web duplicates page, in headless
Chromium (Debian's `chromium`).

    python scripts/screenshot_dedup.py [--out docs]

Indexes sample_data/photos with the bundled tiny model into a temporary library, writes the HTML report
and serves the library on a free loopback port; saves docs/screenshot-dedup-report.png and
docs/screenshot-dedup-web.png once the thumbnails on screen have loaded.
"""
from __future__ import annotations

import argparse
import socket
import tempfile
import threading
from pathlib import Path

import uvicorn
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from clipsearch import Library, model_spec
from clipsearch.reports import write_html
from clipsearch.webapp import create_app

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
THUMBNAILS_LOADED = ("[...document.querySelectorAll('img')].filter(i => i.getBoundingClientRect().top < innerHeight)"
                     ".every(i => i.complete && i.naturalWidth > 0)")


def save(page: Page, path: Path) -> None:
    """A screenshot as an 8-bit palette PNG, to keep it small."""
    page.wait_for_function(THUMBNAILS_LOADED)
    page.screenshot(path=str(path))
    Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(path, path.stat().st_size, "bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Library.open(Path(tmp) / "lib", create=True) as lib:
        lib.index([ROOT / "sample_data" / "photos"], model=model_spec("clipsearch-tiny"), device="cpu")
        write_html(lib.duplicates(series_threshold=0.88), Path(tmp) / "report.html")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = uvicorn.Server(uvicorn.Config(create_app(lib), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((Path(tmp) / "report.html").as_uri())
            page.locator("#group-1 input.keep").nth(1).check()  # what a user does: pick another keeper
            page.evaluate("window.scrollTo(0, 0)")
            save(page, args.out / "screenshot-dedup-report.png")
            page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/#/duplicates")
            page.wait_for_selector(".group .card")
            save(page, args.out / "screenshot-dedup-web.png")
            browser.close()
        server.should_exit = True
        thread.join()


if __name__ == "__main__":
    main()
