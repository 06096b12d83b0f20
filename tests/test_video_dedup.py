"""Duplicate videos: byte copies and re-encodes of one clip grouped as videos, never with photos or other clips."""
import csv
import json
import random
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipsearch import Library
from clipsearch.catalog import Catalog
from clipsearch.cli import main
from clipsearch.duplicates import keeper_key, same_length
from clipsearch.shapes import ShapeSpec, render

from generated import write_clip

A, B, C, D = (("red", "star"), ("blue", "circle"), ("green", "square"), ("yellow", "triangle"))


def scene(colour_kind, size=128):
    colour, kind = colour_kind
    return np.asarray(render(ShapeSpec(colour, kind, "white"), random.Random(0), size=size))


def scenes(*which, size=128):
    return [scene(s, size) for s in which]


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


CLIP = {"album/clip.mp4": "keeper", "old/clip.mp4": "exact", "shared/clip.mkv": "near", "shared/clip.webm": "near",
        "shared/clip.avi": "near", "shared/clip.mov": "near"}
"""The clip (a red star, then a blue circle, 1.5 s each, 128 px), a byte copy and re-encodes: another size
(64 px) and container (MKV, WebM/VP9), another codec (AVI/MPEG-4), a lower bitrate (MOV)."""
NOT_COPIES = ("other.mp4", "longer.mp4", "first.mp4", "held.mp4")
"""Other clips: the same first scene then another; the clip and one more scene; its first scene alone (half as
long); its first scene held as long as the whole clip."""


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_clip(root / "album/clip.mp4", scenes(A, B))
    (root / "old").mkdir()
    shutil.copy(root / "album/clip.mp4", root / "old/clip.mp4")
    write_clip(root / "shared/clip.mkv", scenes(A, B, size=64))
    write_clip(root / "shared/clip.webm", scenes(A, B, size=64))
    write_clip(root / "shared/clip.avi", scenes(A, B))
    write_clip(root / "shared/clip.mov", scenes(A, B), crf=40)
    write_clip(root / "beach/beach.mp4", scenes(C, D))
    write_clip(root / "beach/beach.mov", scenes(C, D), crf=40)  # as sharp, fewer bytes per second
    write_clip(root / "park/park.mp4", scenes(D, C), crf=30)
    write_clip(root / "park/park.mkv", scenes(D, C, size=64), crf=0)  # lossless: more bytes, fewer pixels
    write_clip(root / "other.mp4", scenes(A, C))
    write_clip(root / "longer.mp4", scenes(A, B, C))
    write_clip(root / "first.mp4", scenes(A))
    write_clip(root / "held.mp4", scenes(A), seconds_each=3.0)
    (root / "photos").mkdir()
    Image.fromarray(scene(A)).save(root / "photos/star.png")  # the clip's first frame, as a photo
    Image.fromarray(scene(A)).save(root / "photos/star.jpg", quality=90)
    library = root / "library"
    cli("index", root, "--db", library, "--model", "clipsearch-tiny", "-q")
    return root, library


def dedup(library, tmp_path, *args):
    report = tmp_path / "report.json"
    out = cli("dedup", "--db", library, "--json", report, *args)
    return out, json.loads(report.read_text())


def members(group, root):
    return {m["path"][len(str(root)) + 1:]: m["tier"] for m in group["members"]}


def group_of(data, root, name):
    found = [g for g in data["groups"] if name in members(g, root)]
    assert len(found) <= 1
    return found[0] if found else None


def test_byte_copies_and_reencodes_are_one_group_of_videos(media, tmp_path):
    root, library = media
    out, data = dedup(library, tmp_path, "--csv", tmp_path / "report.csv", "--html", tmp_path / "report.html")
    clip = group_of(data, root, "album/clip.mp4")
    assert members(clip, root) == CLIP
    assert clip["tier"] == "near" and clip["keeper_reason"] == (  # not over its byte copy: over the re-encodes
        "it has the highest bitrate (a video) among the files of the highest resolution")
    assert all(m["kind"] == "video" and m["duration_s"] == pytest.approx(3.0, abs=0.1) for m in clip["members"])
    assert all(m["phash_distance"] <= 24 for m in clip["members"])
    assert clip["reclaimable_bytes"] == sum(m["size"] for m in clip["members"] if m["tier"] != "keeper")
    assert data["exact_copies"] == 1
    assert "#1 near (videos)" in out and "64x64  video 00:00:03" in out, out
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert {(r["kind"], r["duration_s"][:3]) for r in rows if "clip." in r["path"]} == {("video", "3.0")}
    page = (tmp_path / "report.html").read_text()
    assert "near (videos)" in page and "128×128 · video 00:00:03" in page and "file missing" not in page


def test_the_keeper_is_the_sharpest_then_the_highest_bitrate(media, tmp_path):
    root, library = media
    _, data = dedup(library, tmp_path)
    beach = group_of(data, root, "beach/beach.mp4")
    assert members(beach, root) == {"beach/beach.mp4": "keeper", "beach/beach.mov": "near"}
    assert beach["keeper_reason"] == "it has the highest bitrate (a video)"
    park = group_of(data, root, "park/park.mp4")
    assert members(park, root) == {"park/park.mp4": "keeper", "park/park.mkv": "near"}
    assert park["keeper_reason"] == "it has the highest resolution (a video)"
    sizes = {m["path"].rsplit("/", 1)[1]: m["size"] for m in park["members"]}
    assert sizes["park.mkv"] > sizes["park.mp4"]  # more bytes per second, yet fewer pixels


def test_keeper_rule_for_videos_puts_quality_before_date():
    def row(path, w, size, date, duration=10.0):
        return {"path": path, "camera": None, "date": date, "width": w, "height": w, "size": size, "video": True,
                "duration_s": duration}

    rows = [row("/v/new_sharp.mp4", 1920, 5_000, "2024-01-01T00:00:00"),
            row("/v/old_small.mp4", 640, 9_000, "2020-01-01T00:00:00"),
            row("/v/new_dense.mp4", 1920, 8_000, "2024-01-01T00:00:00"),
            row("/v/unknown_length.mp4", 1920, 9_000, "2019-01-01T00:00:00", duration=None)]
    ranked = [r["path"] for r in sorted(rows, key=keeper_key)]
    assert ranked == ["/v/new_dense.mp4", "/v/new_sharp.mp4", "/v/unknown_length.mp4", "/v/old_small.mp4"]


@pytest.mark.parametrize("threshold", [None, "0.5"])
def test_other_clips_are_not_copies_even_where_the_cosine_says_so(media, tmp_path, threshold):
    """Sharing a first scene, holding it longer, adding a scene or showing the same scenes in another order (park,
    beach) makes another clip, whatever the model scores (at --threshold 0.5 the cosine alone would link them)."""
    root, library = media
    _, data = dedup(library, tmp_path, *(["--threshold", threshold] if threshold else []), "--series")
    for name in NOT_COPIES:
        assert group_of(data, root, name) is None, name
    assert members(group_of(data, root, "album/clip.mp4"), root) == CLIP
    assert set(members(group_of(data, root, "park/park.mp4"), root)) == {"park/park.mp4", "park/park.mkv"}
    assert all(len({m["kind"] for m in g["members"]}) == 1 for g in data["groups"])


def test_a_photo_of_the_first_frame_is_not_a_copy_of_the_video(media, tmp_path):
    """A still and a clip are different things to keep, even when the clip shows nothing else (first.mp4)."""
    root, library = media
    _, data = dedup(library, tmp_path)
    photos = group_of(data, root, "photos/star.png")
    assert set(members(photos, root)) == {"photos/star.png", "photos/star.jpg"}
    assert {m["kind"] for m in photos["members"]} == {"photo"}
    assert group_of(data, root, "first.mp4") is None


def test_videos_indexed_before_fingerprints_are_sampled_at_dedup_time(media, tmp_path):
    root, library = media
    old = shutil.copytree(library, tmp_path / "old-library")
    catalog = Catalog.open(old)
    with catalog.db.conn as conn:
        conn.execute("UPDATE images SET phash = NULL, duration_s = NULL WHERE path LIKE '%/shared/clip.m%'"
                     " OR path LIKE '%/longer.mp4' OR path LIKE '%/held.mp4'")
    catalog.close()
    _, data = dedup(old, tmp_path, "--threshold", "0.5")
    assert members(group_of(data, root, "album/clip.mp4"), root) == CLIP
    assert group_of(data, root, "longer.mp4") is None and group_of(data, root, "held.mp4") is None


def test_exact_only_reports_byte_copies_of_videos(media, tmp_path):
    root, library = media
    out, data = dedup(library, tmp_path, "--exact-only")
    assert [members(g, root) for g in data["groups"]] == [{"album/clip.mp4": "keeper", "old/clip.mp4": "exact"}]
    assert data["groups"][0]["members"][1]["kind"] == "video" and "exact  1.000  128x128  video 00:00:03" in out


def test_the_web_page_marks_duplicate_videos(media, tiny):
    from fastapi.testclient import TestClient

    from clipsearch.webapp import create_app

    _, library = media
    with Library.open(library, encoder=tiny) as lib, \
            TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        groups = client.get("/api/duplicates").json()["groups"]
        page = client.get("/").text
    clip = next(g for g in groups if g["members"][0]["path"].endswith("clip.mp4"))
    assert {(m["kind"], round(m["duration_s"])) for m in clip["members"]} == {("video", 3)}
    assert "videoLength(image)" in page


def test_video_copies_are_listed_moved_and_restored(tmp_path):
    root = tmp_path / "media"
    write_clip(root / "a/clip.mp4", scenes(A, B))
    (root / "b").mkdir()
    shutil.copy(root / "a/clip.mp4", root / "b/clip.mp4")
    write_clip(root / "a/clip.mkv", scenes(A, B, size=64))
    before = {p: p.read_bytes() for p in root.rglob("clip.*")}
    library = tmp_path / "library"
    cli("index", root, "--db", library, "--model", "clipsearch-tiny", "-q")
    listed, quarantine = tmp_path / "delete.txt", tmp_path / "quarantine"
    out = cli("dedup", "--db", library, "--delete-list", listed, "--move-to", quarantine)
    assert sorted(listed.read_text().splitlines()) == [str(root / "a/clip.mkv"), str(root / "b/clip.mp4")]
    assert "moved 2 files" in out and (root / "a/clip.mp4").exists()
    assert not (root / "b/clip.mp4").exists() and not (root / "a/clip.mkv").exists()
    cli("undo-move", next(quarantine.glob("clipsearch-moves-*.json")))
    assert {p: p.read_bytes() for p in root.rglob("clip.*")} == before


@pytest.mark.parametrize("a,b,same", [(3.0, 3.04, True), (3.0, 3.5, True), (3.0, 4.5, False), (1.5, 3.0, False),
                                      (600.0, 610.0, True), (600.0, 630.0, False), (None, 3.0, True)])
def test_lengths_agree_within_half_a_second_or_two_percent(a, b, same):
    assert same_length(a, b) is same and same_length(b, a) is same


def test_a_phone_clip_decoded_and_encoded_again_is_a_near_copy(tmp_path, library_dir):
    """Real pictures (the sample photos), written at 640x480, then decoded and encoded again at half the size and
    lower quality with B-frames: the same pixels, so a near copy, reclaimable; a clip of other photos is not."""
    from pathlib import Path

    from generated import transcode

    photos = sorted((Path(__file__).resolve().parent.parent / "sample_data" / "photos").glob("*.jpg"))
    frames = [np.asarray(Image.open(p).convert("RGB").resize((640, 480))) for p in photos]
    original = write_clip(tmp_path / "phone/IMG_0001.mp4", frames[:3], preset="medium")
    transcode(original, tmp_path / "shared/IMG_0001.mp4", 320, 240, crf=32)
    write_clip(tmp_path / "phone/IMG_0002.mp4", frames[3:6], preset="medium")
    cli("index", tmp_path / "phone", tmp_path / "shared", "--db", library_dir, "--model", "clipsearch-tiny", "-q")
    cli("dedup", "--db", library_dir, "--json", tmp_path / "report.json")
    [group] = json.loads((tmp_path / "report.json").read_text())["groups"]
    tiers = {m["path"].split(str(tmp_path) + "/")[1]: m["tier"] for m in group["members"]}
    assert tiers == {"phone/IMG_0001.mp4": "keeper", "shared/IMG_0001.mp4": "near"}
    assert group["reclaimable_bytes"] == (tmp_path / "shared/IMG_0001.mp4").stat().st_size
