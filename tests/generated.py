"""Writers for camera files the tests and benchmarks generate: DNG (a TIFF/EP raw) and video clips."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SHORT, LONG, ASCII, BYTE, SRATIONAL, RATIONAL = 3, 4, 2, 1, 10, 5
_FORMATS = {BYTE: "B", ASCII: "s", SHORT: "H", LONG: "I", RATIONAL: "I", SRATIONAL: "i"}


class _Tiff:
    """A little-endian TIFF written front to back: data blocks first, then the IFDs that point at them."""

    def __init__(self) -> None:
        self.out = bytearray(b"II*\x00\x00\x00\x00\x00")

    def block(self, data: bytes) -> int:
        if len(self.out) % 2:
            self.out += b"\x00"
        offset = len(self.out)
        self.out += data
        return offset

    def ifd(self, tags: dict[int, tuple[int, object]]) -> int:
        entries = []
        for tag in sorted(tags):
            kind, value = tags[tag]
            if kind == ASCII:
                payload, count = value.encode() + b"\x00", len(value) + 1
            else:
                values = list(value) if isinstance(value, (list, tuple)) else [value]
                payload = struct.pack("<" + _FORMATS[kind] * len(values), *values)
                count = len(values) // 2 if kind in (RATIONAL, SRATIONAL) else len(values)
            if len(payload) <= 4:
                field = payload.ljust(4, b"\x00")
            else:
                field = struct.pack("<I", self.block(payload))
            entries.append(struct.pack("<HHI", tag, kind, count) + field)
        return self.block(struct.pack("<H", len(entries)) + b"".join(entries) + b"\x00\x00\x00\x00")

    def finish(self, first_ifd: int) -> bytes:
        self.out[4:8] = struct.pack("<I", first_ifd)
        return bytes(self.out)


def bayer(rgb: np.ndarray, white: int = 4095) -> np.ndarray:
    """An RGGB mosaic (uint16, 12-bit) of an RGB picture (uint8, H x W x 3, even sides)."""
    scaled = rgb.astype(np.uint32) * white // 255
    cfa = np.empty(rgb.shape[:2], np.uint16)
    cfa[0::2, 0::2] = scaled[0::2, 0::2, 0]
    cfa[0::2, 1::2] = scaled[0::2, 1::2, 1]
    cfa[1::2, 0::2] = scaled[1::2, 0::2, 1]
    cfa[1::2, 1::2] = scaled[1::2, 1::2, 2]
    return cfa


def dng_bytes(rgb: np.ndarray, preview: np.ndarray | None = None, orientation: int = 1,
              model: str = "TestCam 1", taken: str = "2023:01:02 03:04:05") -> bytes:
    """A DNG 1.4 of `rgb` as a 12-bit RGGB mosaic, with `preview` (uint8 RGB) as its baseline-JPEG
    preview in IFD0 and the mosaic in a SubIFD, or without a preview (the mosaic in IFD0)."""
    tiff = _Tiff()
    cfa = bayer(rgb)
    h, w = cfa.shape
    mosaic = {
        256: (LONG, w), 257: (LONG, h), 258: (SHORT, 16), 259: (SHORT, 1), 262: (SHORT, 32803),
        273: (LONG, tiff.block(cfa.astype("<u2").tobytes())), 277: (SHORT, 1), 278: (LONG, h),
        279: (LONG, cfa.nbytes), 284: (SHORT, 1), 33421: (SHORT, (2, 2)), 33422: (BYTE, (0, 1, 1, 2)),
        50714: (SHORT, 0), 50717: (SHORT, 4095),
    }
    exif_ifd = tiff.ifd({36867: (ASCII, taken)})
    camera = {
        271: (ASCII, "TestMake"), 272: (ASCII, model), 274: (SHORT, orientation), 306: (ASCII, taken),
        34665: (LONG, exif_ifd), 50706: (BYTE, (1, 4, 0, 0)), 50707: (BYTE, (1, 1, 0, 0)),
        50708: (ASCII, model), 50721: (SRATIONAL, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)),
        50728: (RATIONAL, (1, 1, 1, 1, 1, 1)), 50778: (SHORT, 21),
    }
    if preview is None:
        return tiff.finish(tiff.ifd({254: (LONG, 0), **mosaic, **camera}))
    jpeg = io.BytesIO()
    Image.fromarray(preview).save(jpeg, "JPEG", quality=90)
    ph, pw = preview.shape[:2]
    raw_ifd = tiff.ifd({254: (LONG, 0), **mosaic})
    return tiff.finish(tiff.ifd({
        254: (LONG, 1), 256: (LONG, pw), 257: (LONG, ph), 258: (SHORT, (8, 8, 8)), 259: (SHORT, 7),
        262: (SHORT, 6), 273: (LONG, tiff.block(jpeg.getvalue())), 277: (SHORT, 3), 278: (LONG, ph),
        279: (LONG, len(jpeg.getvalue())), 284: (SHORT, 1), 330: (LONG, raw_ifd), **camera,
    }))


def write_dng(path: Path, rgb: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dng_bytes(rgb, **kwargs))
    return path


CODECS = {".mp4": "libx264", ".mov": "libx264", ".m4v": "libx264", ".mkv": "libx264", ".3gp": "libx264",
          ".webm": "libvpx-vp9", ".avi": "mpeg4"}


def write_clip(path: Path, scenes: list[np.ndarray], seconds_each: float = 1.5, fps: int = 10,
               creation_time: str | None = "2022-07-08T09:10:11Z", gop: int = 1000, crf: int | None = None,
               preset: str = "ultrafast") -> Path:
    """A clip, one picture (uint8 RGB, H x W x 3, even sides) per scene sliding slowly sideways, each scene
    starting on a keyframe (and one every `gop` frames), written with a codec its container holds (H.264 at
    constant quality `crf` where given: higher, fewer bytes; x264's `preset`: "ultrafast" writes no B-frames,
    "medium", as phones and cameras do, writes them, so frames are decoded out of display order)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = scenes[0].shape[:2]
    with av.open(str(path), "w") as container:
        if creation_time:
            container.metadata["creation_time"] = creation_time
        stream = container.add_stream(CODECS[path.suffix.lower()], rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        if stream.codec_context.name == "libx264":
            stream.codec_context.options = {"forced-idr": "1", "preset": preset,
                                            **({"crf": str(crf)} if crf is not None else {})}
        frames_each = int(round(seconds_each * fps))
        for scene, picture in enumerate(scenes):
            for i in range(frames_each):
                moved = np.roll(picture, i, axis=1)  # slow motion within a scene
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(moved), format="rgb24")
                frame.pts = scene * frames_each + i
                if i == 0:
                    frame.pict_type = av.video.frame.PictureType.I
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def transcode(source: Path, path: Path, width: int, height: int, crf: int = 30) -> Path:
    """Decode a clip and encode it again (H.264 with B-frames, x264 preset "medium", at another size and
    quality), as a messenger or an editor's export does to a phone's video."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(source)) as reader, av.open(str(path), "w") as writer:
        stream = writer.add_stream("libx264", rate=reader.streams.video[0].average_rate or 10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "medium", "crf": str(crf)}
        for frame in reader.decode(video=0):
            picture = frame.to_image().resize((width, height))
            out = av.VideoFrame.from_image(picture)
            out.pts = None
            writer.mux(stream.encode(out))
        writer.mux(stream.encode(None))
    return path
