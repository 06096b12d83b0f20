"""Videos through PyAV (FFmpeg): a few sampled frames per video, each embedded like a photo.

Sampling seeks; it never decodes a whole video. The keyframe times come from the container's
index where it lists every frame (MP4, MOV, AVI), else a packet scan that decodes nothing.
At most `max_frames` of those keyframes, spread evenly over the video, are decoded, one seek
each. A decoded keyframe is kept when it comes at least `interval_s` after the last kept frame,
or when it starts a new scene (its colour histogram differs from the last kept frame's by more
than SCENE_CHANGE; motion within a scene barely moves a histogram); the first is always kept.
Encoders put a keyframe at each cut, so cuts are found among keyframes. A three-hour video
thus costs at most `max_frames` decoded frames.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from .errors import BadImage, BadQuery

if TYPE_CHECKING:
    import av
    from PIL import Image

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".3gp"})
SCENE_CHANGE = 0.15
"""Total variation distance (0 to 1) between two frames' colour histograms (4 levels per channel) that marks a cut."""
_KEYFRAME = 1  # AVINDEX_KEYFRAME
_MOMENT = re.compile(r"^(?P<path>.+)@(?P<at>([0-9]+:)?[0-9]{1,2}:[0-9]{2}(\.[0-9]*)?|[0-9]+(\.[0-9]*)?)$", re.S)
_HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class Sampling:
    """How frames are chosen from a video (see the module docstring)."""

    interval_s: float = 5.0
    max_frames: int = 50


@dataclass(frozen=True)
class Frame:
    ms: int  # time from the start of the video, in milliseconds
    image: Image.Image  # RGB, rotated as the video is shown


@dataclass(frozen=True)
class Clip:
    """A video's sampled frames (at least one, in time order) and what its container says about it."""

    frames: tuple[Frame, ...]
    width: int
    height: int
    duration_s: float | None
    taken_at: str | None
    camera: str | None


def is_video(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def file_hash(path: str) -> str:
    """The content hash of a file read in chunks: equal to `decode.content_hash` of its bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_moment(query: str) -> tuple[str, float] | None:
    """'clip.mp4@83.5' or 'clip.mp4@00:01:23.5' (as `clock` prints moments) -> ('clip.mp4', 83.5) for a video
    file name; None for anything else."""
    match = _MOMENT.match(query)
    if match is None or not is_video(match["path"]):
        return None
    *clock_parts, last = match["at"].split(":")
    if any(float(p) >= 60 for p in (clock_parts[1:] + [last] if clock_parts else [])):
        return None  # 00:99:00 is no moment
    seconds = 0.0
    for part in (*clock_parts, last):
        seconds = seconds * 60 + float(part)
    return match["path"], seconds


def bad_moment(query: str) -> str | None:
    """The video file of 'clip.mp4@<not a moment>' (an existing video followed by @ and something that is no
    number of seconds nor HH:MM:SS), else None."""
    head, at, _ = query.rpartition("@")
    return head if at and is_video(head) and os.path.isfile(head) and parse_moment(query) is None else None


def clock(ms: int) -> str:
    """83_400 -> '00:01:23'."""
    seconds = ms // 1000
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def sample(path: str, sampling: Sampling = Sampling(), min_side: int | None = None) -> Clip:
    """Sample a video's frames (reduced towards `min_side` on their shorter side, never below).

    Raises BadImage for a file FFmpeg cannot read or one without a decodable video frame.
    """
    import av  # here, not with the module: loading FFmpeg takes a quarter second that searches need not pay

    try:
        with av.open(path) as container:
            stream = _video_stream(container)
            duration = _duration(container, stream)
            kept: list[Frame] = []
            last_colours = None
            for seconds in _spread(_keyframe_times(container, stream), duration, sampling.max_frames):
                frame = _frame_near(container, stream, seconds)
                if frame is None or (kept and frame.ms <= kept[-1].ms):
                    continue
                colours = _colours(frame.image)
                if (not kept or frame.ms - kept[-1].ms >= sampling.interval_s * 1000
                        or 0.5 * float(np.abs(colours - last_colours).sum()) > SCENE_CHANGE):
                    kept.append(Frame(frame.ms, _shrink(frame.image, min_side)))
                    last_colours = colours
            if not kept:
                raise BadImage("cannot decode video: no decodable frame")
            tags = {**container.metadata, **stream.metadata}
            width, height = _full_size(stream, kept[0].image)
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        raise BadImage(f"cannot decode video: {_reason(e)}") from None
    return Clip(tuple(kept), width, height, duration, _creation_time(tags), _camera(tags))


def frame_at(path: str, seconds: float, min_side: int | None = None) -> Image.Image:
    """The frame shown at `seconds`.

    Raises BadImage for a file FFmpeg cannot read, BadQuery for a moment past the video's end (where its
    length is known; else the last frame is given).
    """
    import av

    try:
        with av.open(path) as container:
            stream = _video_stream(container)
            length = _duration(container, stream)
            if length is not None and seconds > length:
                raise BadQuery(f"{seconds:g} s is past the end: the video is {length:.1f} s long "
                               f"({clock(round(length * 1000))})")
            chosen = None
            start = stream.start_time or 0
            offset = float(start * stream.time_base)
            container.seek(start + int(seconds / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if chosen is not None and frame.time is not None and frame.time - offset > seconds:
                    break
                chosen = frame
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        raise BadImage(f"cannot decode video: {_reason(e)}") from None
    if chosen is None:
        raise BadImage(f"cannot decode video: no frame at {seconds}s")
    return _shrink(_picture(chosen), min_side)


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise BadImage("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"  # one worker per core already; frame threads would only add latency
    return stream


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None  # AV_TIME_BASE units


def _keyframe_times(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> list[float]:
    """Keyframe times in seconds: from the container's index where it lists every frame (MP4, MOV, AVI),
    else from a packet scan, which reads but decodes nothing (Matroska/WebM cues list only some keyframes)."""
    base = stream.time_base or 0
    start = stream.start_time or 0
    entries = stream.index_entries
    if entries and not all(e.flags & _KEYFRAME for e in entries):
        shift = _reorder_delay(container, stream)
        times = [float((e.timestamp + shift - start) * base) for e in entries if e.flags & _KEYFRAME]
    else:
        times = [float((p.pts - start) * base) for p in container.demux(stream) if p.is_keyframe and p.pts is not None]
    return sorted(set(t for t in times if t >= 0)) or [0.0]


def _reorder_delay(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """How much later a keyframe is shown than decoded (pts − dts, the B-frame reorder delay), in the stream's
    time base: an index lists decoding times. 0 where the first keyframe packet does not say."""
    for packet in container.demux(stream):
        if packet.is_keyframe and packet.pts is not None and packet.dts is not None:
            return int(packet.pts - packet.dts)
    return 0


def _spread(times: list[float], duration: float | None, limit: int) -> list[float]:
    """At most `limit` of `times` (ascending): the first at or after each of `limit` evenly spaced moments."""
    if len(times) <= limit:
        return times
    span = duration or times[-1] or 1.0
    chosen: list[float] = []
    j = 0
    for i in range(limit):
        while j < len(times) and times[j] < i * span / limit:
            j += 1
        if j == len(times):
            break
        chosen.append(times[j])
        j += 1
    return chosen


def _frame_near(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                seconds: float) -> Frame | None:
    """The keyframe at `seconds`: one seek, then the first frame decoded."""
    start = stream.start_time or 0
    container.seek(start + int(round(seconds / stream.time_base)), stream=stream, backward=True)
    for frame in container.decode(stream):
        at = frame.time - float(start * stream.time_base) if frame.time is not None else seconds
        return Frame(int(round(max(at, 0.0) * 1000)), _picture(frame))
    return None


def _colours(image: Image.Image) -> np.ndarray:
    """A frame's colour histogram: 64 bins (4 levels per channel) over a 32×32 thumbnail, summing to 1."""
    from PIL import Image

    levels = np.asarray(image.resize((32, 32), Image.BILINEAR), dtype=np.uint8) // 64
    bins = (levels[..., 0].astype(np.int64) * 16 + levels[..., 1] * 4 + levels[..., 2]).ravel()
    return np.bincount(bins, minlength=64) / bins.size


def _picture(frame: av.VideoFrame) -> Image.Image:
    image = frame.to_image()
    return image.rotate(frame.rotation, expand=True) if frame.rotation % 360 else image


def _shrink(image: Image.Image, min_side: int | None) -> Image.Image:
    """Halve while the shorter side stays at least `min_side` (cheap, like a JPEG draft)."""
    if not min_side:
        return image
    factor = 1
    while min(image.size) // (factor * 2) >= min_side:
        factor *= 2
    return image.reduce(factor) if factor > 1 else image


def _full_size(stream: av.video.stream.VideoStream, first: Image.Image) -> tuple[int, int]:
    """The video's width and height as shown (turned like its frames)."""
    width, height = stream.codec_context.width, stream.codec_context.height
    portrait = first.height > first.width
    return (min(width, height), max(width, height)) if portrait else (max(width, height), min(width, height))


def _creation_time(tags: dict[str, str]) -> str | None:
    """The container's creation time (UTC) as local time, like an EXIF date."""
    value = tags.get("creation_time") or tags.get("com.apple.quicktime.creationdate")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None
    if when is None or when.year <= 1970:
        return None
    return (when.astimezone().replace(tzinfo=None) if when.tzinfo else when).isoformat(timespec="seconds")


def _camera(tags: dict[str, str]) -> str | None:
    value = tags.get("com.apple.quicktime.model") or tags.get("com.android.model") or tags.get("model")
    return value.strip() or None if value else None


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
