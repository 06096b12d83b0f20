"""End to end in real headless Chromium: the page, the app and the library working together."""
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest

from clipsearch import Library, model_spec
from clipsearch.webapp import create_app

from conftest import draw_shape

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
expect = sync_api.expect
expect.set_options(timeout=30_000)  # a loaded 2-core CI machine can be slow; passing tests do not wait


@pytest.fixture
def server(shape_tree, library_dir, tiny):
    """The app on a free loopback port, served by uvicorn in a thread of this process."""
    import uvicorn

    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=model_spec("clipsearch-tiny"), workers=0)
        app = create_app(lib)
        # Listening before the thread starts: the browser's first connection waits in the backlog.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", lib
        uv.should_exit = True
        thread.join()
        sock.close()


@pytest.fixture
def url(server):
    return server[0]


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_search_click_a_result_and_see_its_similar_images(page, server):
    url, lib = server
    expected = [r.path.rsplit("/", 1)[-1] for r in lib.search("a red star", k=8)]
    page.goto(url)
    expect(page.locator("#status")).to_have_text("8 images, newest first")
    page.fill("#q", "a red star")
    page.press("#q", "Enter")

    cards = page.locator("#results .card")
    expect(cards.locator(".name")).to_have_text(expected)
    expect(cards.first.locator(".score")).to_have_text(re.compile(r"^-?\d\.\d{3}$"))
    expect(page.locator("#status")).to_contain_text("8 results for “a red star”")
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")

    cards.first.click()
    expect(page.locator("#detail .name")).to_have_text(expected[0])
    expect(page.locator("#detail dl")).to_contain_text("128 × 128")
    page.wait_for_function("document.querySelector('#detail .large img').naturalWidth > 0")
    similar = page.locator("#similar .card .name")
    expect(similar).to_have_count(7)
    assert sorted(similar.all_inner_texts()) == sorted(expected[1:])

    assert re.search(r"/image/\d+$", page.url)

    page.go_back()
    expect(cards).to_have_count(8)
    expect(page.locator("#q")).to_have_value("a red star")
    assert page.url == url + "/?q=a+red+star"


def test_search_by_uploading_an_image(page, url, shape_tree):
    page.goto(url)
    page.set_input_files("#upload", str(shape_tree / "b" / "yellow_square.png"))
    expect(page.locator("#results .card").first.locator(".name")).to_have_text("yellow_square.png")
    expect(page.locator("#status")).to_contain_text("similar to yellow_square.png")
    assert re.search(r"/upload/[0-9a-f]+$", page.url)
    page.reload()  # the address names the upload: the search survives a reload
    expect(page.locator("#results .card").first.locator(".name")).to_have_text("yellow_square.png")
    expect(page.locator("#status")).to_contain_text("similar to yellow_square.png")

    page.set_input_files("#upload", {"name": "notes.png", "mimeType": "image/png", "buffer": b"not a picture"})
    expect(page.locator("#error")).to_contain_text("notes.png is not a usable image")


def test_duplicates_page(page, url, shape_tree, library_dir, tiny):
    shutil.copy(shape_tree / "a" / "red_star.png", shape_tree / "b" / "copy_of_star.png")
    with Library.open(library_dir, encoder=tiny) as writer:
        writer.index([shape_tree], workers=0)
    page.goto(url + "/duplicates?threshold=0.9999")
    group = page.locator(".group", has_text="Exact copies")
    expect(group.locator(".card .name")).to_have_text(["red_star.png", "copy_of_star.png"])
    expect(group.locator(".tier")).to_have_text(["keep", "exact copy"])
    page.wait_for_function("[...document.querySelectorAll('.group img')].every(i => i.complete && i.naturalWidth > 0)")
    expect(page.locator("#chosen")).to_have_text("1 file ticked for deletion")
    group.locator("input.keep").nth(1).check()  # keep the copy instead: the original is ticked by no one
    expect(group.locator("input.remove").nth(1)).to_be_disabled()
    group.locator("input.remove").nth(0).check()
    with page.expect_download() as download:
        page.click("#download")
    assert Path(download.value.path()).read_text() == str(shape_tree / "a" / "red_star.png") + "\n"
    page.goto(url + "/duplicates?threshold=0.9&series=0.95")
    expect(page.locator("#error")).to_contain_text("series_threshold 0.95 must be above 0 and below threshold 0.9")
    expect(page.locator(".group")).to_have_count(0)  # no stale groups under the error


def test_library_page(page, url, library_dir):
    page.goto(url + "/info")
    expect(page.locator("#info")).to_contain_text(str(library_dir))
    expect(page.locator("#info")).to_contain_text("clipsearch-tiny")


def test_words_read_in_an_image_are_shown_and_marked(page, url, shape_tree, library_dir):
    """Text rows written directly (no OCR engine needed): the page shows and marks them."""
    from clipsearch import textsearch

    with Library.open(library_dir) as writer:
        star = writer.catalog.row_by_path(str(shape_tree / "a" / "red_star.png"))["id"]
        textsearch.ensure_fts(writer.catalog)
        box = ((0, 0), (90, 0), (90, 20), (0, 20))
        textsearch.write_text(writer.catalog, [(star, "read", [textsearch.TextLine("GRAND Sale today", 0.99, box),
                                                               textsearch.TextLine("<b>not markup</b>", 0.9, box)])])
    page.goto(url + "/?q=sale")
    first = page.locator("#results .card").first
    expect(first.locator(".name")).to_have_text("red_star.png")
    expect(first.locator(".snippet mark")).to_have_text("Sale")
    first.click()
    expect(page.locator("#text pre")).to_have_text("GRAND Sale today\n<b>not markup</b>")
    expect(page.locator("#text mark")).to_have_text("Sale")


def test_browse_newest_first_and_load_more_as_the_page_scrolls(page, url, shape_tree, library_dir, tiny):
    more = shape_tree / "more"
    for i in range(37):
        draw_shape(more / f"shape_{i:02}.png", "red", "circle", seed=100 + i, size=32)
    newest = more / "shape_36.png"
    os.utime(newest, (2_000_000_000, 2_000_000_000))
    with Library.open(library_dir, encoder=tiny) as writer:
        writer.index([shape_tree], workers=0)
    page.goto(url)
    cards = page.locator("#results .card")
    expect(cards).to_have_count(40)
    expect(cards.first.locator(".name")).to_have_text("shape_36.png")
    expect(page.locator("#status")).to_have_text("45 images, newest first · showing 40")
    page.locator("#more").scroll_into_view_if_needed()  # infinite scroll: the next page loads by itself
    expect(cards).to_have_count(45)
    expect(page.locator("#more")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("45 images, newest first")
    assert len(set(cards.evaluate_all("cards => cards.map(c => c.dataset.id)"))) == 45


def test_every_filter_is_a_control_and_in_the_address(page, server, shape_tree):
    url, lib = server
    lib.tag(["star", "circle"])
    label, tagged = lib.tags()[0].label, lib.tags()[0].images
    folder = str(shape_tree / "a")
    page.goto(url + "/#/search?q=a%20red%20star")  # an address of the earlier page still works
    expect(page.locator("#results .card")).to_have_count(8)
    assert page.url == url + "/?q=a+red+star"

    page.click("#filterbox summary")
    page.fill("#filters [name=under]", folder)
    page.press("#filters [name=under]", "Enter")
    expect(page.locator("#results .card")).to_have_count(4)
    expect(page.locator("#status")).to_contain_text("of 4 matching images")
    expect(page.locator("#filterbox summary")).to_have_text("Filters (1)")
    assert "under=" in page.url and "q=a+red+star" in page.url

    page.fill("#filters [name=min_width]", "200")
    page.press("#filters [name=min_width]", "Enter")
    expect(page.locator(".empty")).to_have_text("No results.")
    page.go_back()  # Back restores the previous search, its filters and their controls
    expect(page.locator("#results .card")).to_have_count(4)
    expect(page.locator("#filters [name=min_width]")).to_have_value("")
    expect(page.locator("#filters [name=under]")).to_have_value(folder)

    page.reload()  # the address alone brings the search and its filters back
    expect(page.locator("#results .card")).to_have_count(4)
    expect(page.locator("#q")).to_have_value("a red star")
    page.click("#clear")
    expect(page.locator("#results .card")).to_have_count(8)
    assert page.url == url + "/?q=a+red+star"

    for name, value, count in [("min_height", "128", 8), ("camera", "Canon", 0), ("after", "2999-01-01", 0),
                               ("before", "2999-01-01", 8)]:
        page.fill(f"#filters [name={name}]", value)
        page.press(f"#filters [name={name}]", "Enter")
        expect(page.locator("#results .card")).to_have_count(count)
        assert f"{name}=" in page.url
        page.click("#clear")
    page.select_option("#filters [name=ext]", "png")
    expect(page.locator("#status")).to_contain_text("of 8 matching images")
    page.select_option("#filters [name=tag]", label)
    expect(page.locator("#status")).to_contain_text(f"of {tagged} matching image")
    assert "ext=png" in page.url and f"tag={label}" in page.url
    page.goto(url + f"/?tag={label}")  # browsing, filtered: the matching count
    expect(page.locator("#status")).to_have_text(f"{tagged} matching image{'s' if tagged > 1 else ''}, newest first")


def test_result_view_steps_zooms_copies_and_closes_by_keyboard(page, server):
    url, lib = server
    expected = [r.path for r in lib.search("a red star", k=8)]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page.goto(url + "/?q=a+red+star")
    page.locator("#results .card").first.click()
    expect(page.locator("#path")).to_have_text(expected[0])
    expect(page.locator("#status")).to_have_text("1 of 8")
    expect(page.locator("#prev")).to_be_disabled()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#path")).to_have_text(expected[1])
    page.click("#next")
    expect(page.locator("#path")).to_have_text(expected[2])
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#path")).to_have_text(expected[1])
    expect(page.locator("#detail dl")).to_contain_text("128 × 128")
    expect(page.locator("#detail dl")).to_contain_text("(file time)")  # the EXIF summary: no date taken here
    image_id = re.search(r"/image/(\d+)$", page.url).group(1)
    expect(page.locator("#original")).to_have_attribute("href", f"/api/images/{image_id}/full")

    page.click("#copy")
    expect(page.locator("#copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == expected[1]

    page.wait_for_function("document.querySelector('#detail .large img').naturalWidth > 0")
    box = page.locator("#detail .large").bounding_box()["width"]
    page.click("#zoom")
    expect(page.locator("#detail .large")).to_have_class(re.compile("zoomed"))
    assert page.locator("#detail .large img").bounding_box()["width"] > box
    page.click("#detail .large")
    expect(page.locator("#detail .large")).not_to_have_class(re.compile("zoomed"))

    page.keyboard.press("Escape")  # closes: back to the results the image was opened from
    expect(page.locator("#results .card")).to_have_count(8)
    assert page.url == url + "/?q=a+red+star"
    page.keyboard.press("/")
    expect(page.locator("#q")).to_be_focused()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_phone_sees_the_whole_page_in_its_colour_scheme(server, scheme):
    url, lib = server
    star = lib.catalog.row_by_path(lib.search("a red star", k=1)[0].path)["id"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        phone = browser.new_page(viewport={"width": 375, "height": 740}, color_scheme=scheme, is_mobile=True)
        for path, ready in [("/?q=a+red+star", "#results .card"), (f"/image/{star}", "#detail #path"),
                            ("/duplicates", "form.options"), ("/info", "#info")]:
            phone.goto(url + path)
            expect(phone.locator(ready).first).to_be_visible()
            assert phone.evaluate("document.documentElement.scrollWidth") <= 375, path  # nothing cut off
            pick = phone.locator("#pick").bounding_box()
            assert pick["x"] >= 0 and pick["x"] + pick["width"] <= 375, path
        background = phone.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == {"light": "rgb(246, 247, 249)", "dark": "rgb(18, 21, 27)"}[scheme]
        browser.close()
