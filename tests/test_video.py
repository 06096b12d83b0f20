"""Videos (PyAV): frames sampled at keyframes and scene changes, one result per video at its best moment."""
import json
import random
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from clipsearch import Library, model_spec
from clipsearch import video as video_module
from clipsearch.cli import main
from clipsearch.decode import content_hash
from clipsearch.shapes import ShapeSpec, render
from clipsearch.video import VIDEO_EXTENSIONS, Sampling, sample

from generated import write_clip


def shape(colour, kind, seed=0, size=64):
    return np.asarray(render(ShapeSpec(colour, kind, "white"), random.Random(seed), size=size))


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("ext", sorted(VIDEO_EXTENSIONS))
def test_a_frame_per_scene_from_every_container(ext, tmp_path):
    path = write_clip(tmp_path / f"clip{ext}", [shape("red", "star"), shape("blue", "circle")])
    clip = sample(str(path), Sampling(interval_s=5, max_frames=50), min_side=32)
    assert [f.ms for f in clip.frames] == [0, 1500]
    assert np.asarray(clip.frames[1].image)[..., 2].mean() > np.asarray(clip.frames[0].image)[..., 2].mean()
    assert (clip.width, clip.height) == (64, 64) and clip.frames[0].image.size == (32, 32)
    assert clip.duration_s == pytest.approx(3.0, abs=0.2)


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".m4v", ".mkv"])
def test_b_frames_do_not_shift_the_keyframes_sampled(ext, tmp_path):
    """With B-frames an index lists decoding times, a reorder delay before the times shown: each scene must still
    be sampled at its own first frame, the last one included."""
    scenes = [shape("red", "star"), shape("blue", "circle"), shape("green", "square")]
    path = write_clip(tmp_path / f"clip{ext}", scenes, preset="medium")
    frames = sample(str(path), Sampling(interval_s=5, max_frames=50)).frames
    assert [f.ms for f in frames] == [0, 1500, 3000]
    assert [int(np.argmax(np.asarray(f.image).reshape(-1, 3).mean(0))) for f in frames] == [0, 2, 1]


def test_at_most_one_frame_per_interval_within_a_scene(tmp_path):
    still = shape("green", "square")
    path = write_clip(tmp_path / "still.mp4", [still] * 4, seconds_each=1.0)  # a keyframe each second, no cut
    assert [f.ms for f in sample(str(path), Sampling(interval_s=5)).frames] == [0]
    assert [f.ms for f in sample(str(path), Sampling(interval_s=2)).frames] == [0, 2000]
    assert [f.ms for f in sample(str(path), Sampling(interval_s=1)).frames] == [0, 1000, 2000, 3000]
    assert len(sample(str(path), Sampling(interval_s=0, max_frames=2)).frames) == 2


def test_a_long_video_costs_at_most_its_frame_cap(tmp_path, monkeypatch):
    """Ten minutes, a keyframe every 10 s and a cut every minute: 5 frames decoded, never the whole video."""
    scenes = [shape(c, k, seed=i) for i, (c, k) in enumerate([("red", "star"), ("blue", "circle")] * 5)]
    path = write_clip(tmp_path / "long.mkv", [s for s in scenes for _ in range(6)], seconds_each=10, fps=1)
    decoded = []
    real = video_module._picture
    monkeypatch.setattr(video_module, "_picture", lambda frame: decoded.append(frame) or real(frame))
    clip = sample(str(path), Sampling(interval_s=5, max_frames=5))
    assert len(decoded) <= 5 and 1 <= len(clip.frames) <= 5
    assert clip.frames[-1].ms >= 400_000  # spread over the whole video, not its first minutes


@pytest.fixture
def videos(tmp_path, library_dir):
    """Two clips and a photo: a.mp4 (red star, then blue circle), b.mkv (green square, then a blue circle)."""
    root = tmp_path / "media"
    write_clip(root / "a.mp4", [shape("red", "star"), shape("blue", "circle")])
    write_clip(root / "b.mkv", [shape("green", "square"), shape("blue", "circle", seed=7)], creation_time=None)
    from PIL import Image

    Image.fromarray(shape("yellow", "triangle")).save(root / "photo.png")
    cli("index", root, "--db", library_dir, "--model", "clipsearch-tiny", "-q")
    return root


def test_search_returns_a_video_once_at_its_best_moment(videos, library_dir):
    lines = [line for line in cli("search", "a red star", "--db", library_dir).splitlines()
             if not line.startswith("--")]  # "-- 1 good match, then weaker ones --"
    assert len(lines) == 3 and lines[0].endswith("a.mp4  00:00:00")
    results = json.loads(cli("search", "a green square", "--db", library_dir, "--json"))
    assert sorted(r["path"].rsplit("/", 1)[1] for r in results) == ["a.mp4", "b.mkv", "photo.png"]
    assert results[0]["path"].endswith("b.mkv") and results[0]["time_s"] == 0.0
    assert next(r["time_s"] for r in results if r["path"].endswith("photo.png")) is None
    a = next(r for r in json.loads(cli("search", "a blue circle", "--db", library_dir, "--json"))
             if r["path"].endswith("a.mp4"))
    assert a["time_s"] == 1.5 and a["taken_at"].startswith("2022-07-0")  # the container's UTC time, as local time


def test_similar_takes_a_moment_of_a_video(videos, library_dir):
    results = json.loads(cli("similar", f"{videos / 'a.mp4'}@2", "--db", library_dir, "--json"))
    assert results[0]["path"].endswith("b.mkv") and results[0]["time_s"] == 1.5
    assert not any(r["path"].endswith("a.mp4") for r in results)  # the video itself is left out
    as_printed = json.loads(cli("similar", f"{videos / 'a.mp4'}@00:00:02", "--db", library_dir, "--json"))
    assert [r["path"] for r in as_printed] == [r["path"] for r in results]  # the moment as search prints it
    at_start = json.loads(cli("similar", f"{videos / 'a.mp4'}@0.5", "--db", library_dir, "--json", "-n", "1"))
    assert at_start[0]["path"].endswith(("b.mkv", "photo.png"))
    for bad in ("-3", "abc", "", "00:99:00", "1:2:3:4", "5s", "inf", "\u0663"):  # ٣: an Arabic-Indic digit
        refused = CliRunner().invoke(main, ["similar", f"{videos / 'a.mp4'}@{bad}", "--db", str(library_dir)])
        assert refused.exit_code == 1 and f"{bad!r} is not a moment of" in refused.output, (bad, refused.output)
        assert "HH:MM:SS" in refused.output and "Traceback" not in refused.output
    for clip, moment in (("a.mp4", "99"), ("a.mp4", "00:01:39"), ("b.mkv", "3.5")):
        past = CliRunner().invoke(main, ["similar", f"{videos / clip}@{moment}", "--db", str(library_dir)])
        assert past.exit_code == 1 and "Traceback" not in past.output, past.output
        assert past.output == (f"Error: {videos / clip}: {99 if moment != '3.5' else 3.5:g} s is past the end: "
                               "the video is 3.0 s long (00:00:03)\n")
    at_end = json.loads(cli("similar", f"{videos / 'a.mp4'}@3", "--db", library_dir, "--json", "-n", "1"))
    assert at_end[0]["path"].endswith("b.mkv")  # the last moment is one
    missing = CliRunner().invoke(main, ["similar", f"{videos / 'nope.mp4'}@3", "--db", str(library_dir)])
    assert missing.exit_code != 0 and "nope.mp4" in missing.output and "Traceback" not in missing.output


@pytest.mark.parametrize("ext", sorted(VIDEO_EXTENSIONS))
def test_broken_videos_are_skipped_and_listed(ext, tmp_path, library_dir):
    root = tmp_path / "media"
    good = write_clip(root / f"good{ext}", [shape("red", "star"), shape("blue", "circle")])
    (root / f"garbage{ext}").write_bytes(b"not a video" * 100)
    (root / f"empty{ext}").write_bytes(b"")
    (root / f"truncated{ext}").write_bytes(good.read_bytes()[:300])
    errors = tmp_path / "skipped.json"
    out = cli("index", root, "--db", library_dir, "--model", "clipsearch-tiny", "-q", "--errors", errors)
    assert "added 1" in out and "skipped 3" in out, out
    assert sorted(s["path"].rsplit("/", 1)[1] for s in json.loads(errors.read_text())) == sorted(
        f"{n}{ext}" for n in ("empty", "garbage", "truncated"))
    assert cli("check", "--db", library_dir).strip() == "ok"


def test_changed_copied_and_deleted_videos_keep_catalog_and_index_in_step(videos, library_dir, tiny):
    def state():
        with Library.open(library_dir, encoder=tiny) as lib:
            frames = lib.catalog.db.execute("SELECT count(*) FROM video_frames").fetchone()[0]
            rows = dict(lib.catalog.db.execute("SELECT path, hash FROM images").fetchall())
            return frames, rows, lib.check()

    frames, rows, problems = state()
    assert frames == 4 and problems == []
    assert rows[str(videos / "a.mp4")] == content_hash((videos / "a.mp4").read_bytes())
    shutil.copy(videos / "a.mp4", videos / "copy.mp4")  # a byte copy: same content hash, for dedup
    write_clip(videos / "b.mkv", [shape("yellow", "triangle")])  # re-recorded: one scene now
    (videos / "photo.png").unlink()
    with Library.open(library_dir, encoder=tiny) as lib:
        report = lib.index([videos], model=model_spec("clipsearch-tiny"))
    assert (report.added, report.updated, report.removed) == (1, 1, 1)
    frames, rows, problems = state()
    assert frames == 5 and problems == [] and rows[str(videos / "copy.mp4")] == rows[str(videos / "a.mp4")]
    with Library.open(library_dir, encoder=tiny) as lib:
        assert len(lib.vectors) == 3 + 5
    shutil.rmtree(videos)
    videos.mkdir()
    with Library.open(library_dir, encoder=tiny) as lib:
        lib.index([videos], prune=True)  # an emptied folder looks offline: its rows go only with prune
        assert len(lib.vectors) == 0 and lib.catalog.frame_count() == 0 and lib.check() == []


def test_an_unchanged_video_is_not_decoded_again(videos, library_dir, monkeypatch):
    import clipsearch.pipeline

    monkeypatch.setattr(clipsearch.pipeline, "sample", lambda *a: pytest.fail("decoded an unchanged video"))
    assert "unchanged 3" in cli("index", videos, "--db", library_dir, "-q")


def test_sampling_options_reach_the_index(tmp_path, library_dir, tiny):
    root = tmp_path / "media"
    write_clip(root / "still.mov", [shape("green", "square")] * 4, seconds_each=1.0)
    cli("index", root, "--db", library_dir, "--model", "clipsearch-tiny", "-q", "--video-interval", "1",
        "--video-max-frames", "3")
    with Library.open(library_dir, encoder=tiny) as lib:
        assert lib.catalog.frame_count() == 3


def test_the_web_ui_shows_the_moment_and_serves_the_video(videos, library_dir, tiny):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from clipsearch.webapp import create_app

    with Library.open(library_dir, encoder=tiny) as lib, \
            TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        hits = client.get("/api/search", params={"q": "a blue circle"}).json()["results"]
        hit = next(h for h in hits if h["path"].endswith("a.mp4"))
        assert hit["time_s"] == 1.5
        frame = client.get(f"/api/images/{hit['id']}/thumb", params={"t": hit["time_s"]})
        start = client.get(f"/api/images/{hit['id']}/thumb")
        full = client.get(f"/api/images/{hit['id']}/full")
        endless = [client.get(f"/api/images/{hit['id']}/thumb", params={"t": t}).status_code
                   for t in ("inf", "1e308", "nan", "-1")]
        past = client.get(f"/api/images/{hit['id']}/thumb", params={"t": 99})
        page = client.get("/").text
    blue = [np.asarray(Image.open(io.BytesIO(r.content)))[..., 2].mean() for r in (frame, start)]
    assert frame.headers["content-type"] == "image/jpeg" and blue[0] > blue[1]
    assert full.headers["content-type"] == "video/mp4" and full.content == (videos / "a.mp4").read_bytes()
    assert "#t=${hit.time_s}" in page
    assert endless == [422] * 4
    assert past.status_code == 400 and "99 s is past the end: the video is 3.0 s long" in past.text


def test_a_library_from_before_videos_gains_the_frame_table(tmp_path, library_dir, tiny):
    """The catalog of a library indexed before videos is migrated on open; frames then get ids of their own."""
    from PIL import Image

    from clipsearch.catalog import FRAME_IDS, MIGRATIONS, SCHEMA_VERSION

    frames_migration = next(n for n, m in enumerate(MIGRATIONS) if isinstance(m, str) and "video_frames (" in m)

    root = tmp_path / "media"
    root.mkdir()
    Image.fromarray(shape("yellow", "triangle")).save(root / "photo.png")
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([root], model=model_spec("clipsearch-tiny"))
        with lib.catalog.db.conn as conn:
            conn.executescript("DROP TABLE video_frames; DROP TABLE frame_count;"
                               " DELETE FROM sqlite_sequence WHERE name = 'video_frames';"
                               f" PRAGMA user_version = {frames_migration};")
    write_clip(root / "a.mp4", [shape("red", "star"), shape("blue", "circle")])
    with Library.open(library_dir, encoder=tiny) as lib:
        assert lib.catalog.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert lib.index([root]).added == 1
        assert all(i > FRAME_IDS for i in lib.catalog.frame_ids(lib.catalog.all_ids()))
        assert lib.search("a blue circle", k=1)[0].time_s == 1.5 and lib.check() == []
