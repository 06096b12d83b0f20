"""How close `--gpu-decode` comes to the CPU path: crops, vectors and pHashes of photo-like JPEGs.

For each size, --n photo-like JPEGs (bench_index's generator, quality 90) are turned into the model's uint8
input three ways: the CPU path (Pillow, draft-decoded at a reduced DCT scale), a full decode by Pillow, and
the GPU path (torchvision's decode_jpeg, EXIF turn, torchvision resize and crop on the tensor). The GPU path
runs on --device: "cpu" (libjpeg-turbo) anywhere, "cuda" (nvJPEG) where there is a GPU. Printed per size:
the largest and mean difference of the crops in levels of 255, the smallest cosine between vectors, and the
largest pHash distance in bits of 256. The last line is one JSON object with the figures.

    python benchmarks/bench_gpu_decode_fidelity.py                      # the tiny model, on CPU
    python benchmarks/bench_gpu_decode_fidelity.py --model ViT-B-32     # random weights, same compute
    python benchmarks/bench_gpu_decode_fidelity.py --model ViT-B-32 --device cuda
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import photo  # noqa: E402  (the same photo-like pictures)

from clipsearch.decode import decode, plain_jpeg  # noqa: E402
from clipsearch.devicejpeg import Jpeg, decode_jpegs, thumbnail  # noqa: E402
from clipsearch.models import ModelSpec, load_encoder, model_spec  # noqa: E402
from clipsearch.perceptual import distances, fingerprint  # noqa: E402
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

SIZES = ((640, 480), (1600, 1200), (4000, 3000))


def bits(a: bytes, b: bytes) -> int:
    return int(distances(np.frombuffer(a, np.uint8)[None], np.frombuffer(b, np.uint8)[None])[0][0])


def compare(encoder, data: bytes, device: torch.device) -> dict[str, float]:
    """One JPEG: the GPU path's crop against the CPU path's and a full decode's, their vectors, their pHashes."""
    _, orientation = plain_jpeg(data)
    draft, full = decode(data, encoder.image_size)[0], decode(data)[0]
    picture = decode_jpegs([Jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation)], device)[0]
    ours = encoder.tensor_pixels(picture).cpu()
    cpu, reference = encoder.pixels(draft), encoder.pixels(full)
    vectors = encoder.encode_images(torch.stack([cpu, reference, ours]))
    to_cpu, to_full = (ours.int() - cpu.int()).abs(), (ours.int() - reference.int()).abs()
    phash = fingerprint(Image.fromarray(thumbnail(picture).cpu().numpy()))
    return {"max_vs_cpu": to_cpu.max().item(), "mean_vs_cpu": to_cpu.float().mean().item(),
            "max_vs_full": to_full.max().item(), "mean_vs_full": to_full.float().mean().item(),
            "cos_vs_cpu": float(vectors[2] @ vectors[0]), "cos_vs_full": float(vectors[2] @ vectors[1]),
            "cos_cpu_vs_full": float(vectors[0] @ vectors[1]), "phash_bits_vs_cpu": bits(phash, fingerprint(draft))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clipsearch-tiny", help="clipsearch-tiny, or an open_clip architecture "
                        "with random weights [clipsearch-tiny]")
    parser.add_argument("--device", default="cpu", help="where the GPU path decodes: cpu or cuda [cpu]")
    parser.add_argument("--n", type=int, default=4, help="JPEGs per size [4]")
    add_save_option(parser)
    args = parser.parse_args()

    spec = model_spec(args.model) if args.model == "clipsearch-tiny" else ModelSpec(args.model, None)
    encoder = load_encoder(spec, "cpu")
    device = torch.device(args.device)
    figures: dict[str, object] = {"model": args.model, "decode_device": args.device, "n": args.n}
    print(f"{args.model}, {args.n} JPEGs per size, GPU path decoding on {args.device}")
    for w, h in SIZES:
        rows = []
        for seed in range(args.n):
            out = io.BytesIO()
            photo(seed, (w, h)).save(out, "JPEG", quality=90)
            rows.append(compare(encoder, out.getvalue(), device))
        size = {"max_vs_cpu": max(r["max_vs_cpu"] for r in rows),
                "mean_vs_cpu": float(np.mean([r["mean_vs_cpu"] for r in rows])),
                "max_vs_full": max(r["max_vs_full"] for r in rows),
                "mean_vs_full": float(np.mean([r["mean_vs_full"] for r in rows])),
                "min_cos_vs_cpu": min(r["cos_vs_cpu"] for r in rows),
                "min_cos_vs_full": min(r["cos_vs_full"] for r in rows),
                "min_cos_cpu_vs_full": min(r["cos_cpu_vs_full"] for r in rows),
                "max_phash_bits_vs_cpu": max(r["phash_bits_vs_cpu"] for r in rows)}
        figures[f"{w}x{h}"] = size
        print(f"  {w}x{h}: crops vs CPU path max {size['max_vs_cpu']} (mean {size['mean_vs_cpu']:.2f}), "
              f"vs a full decode max {size['max_vs_full']} (mean {size['mean_vs_full']:.2f}); cosine vs CPU path "
              f"≥ {size['min_cos_vs_cpu']:.5f}, vs full decode ≥ {size['min_cos_vs_full']:.5f} (CPU path vs full "
              f"≥ {size['min_cos_cpu_vs_full']:.5f}); pHash ≤ {size['max_phash_bits_vs_cpu']} bits")
    emit(figures, args)


if __name__ == "__main__":
    main()
