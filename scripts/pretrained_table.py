"""Write clipsearch/pretrained.json: open_clip's pretrained table with each weights file's source, the model's
parameter count, the Hugging Face repositories its text side loads (tokenizer, transformers text tower) and whether
it is multilingual (`clipsearch.models.is_multilingual`), so that `clipsearch models` and the offline checks need
neither torch nor open_clip.

    python scripts/pretrained_table.py    # after upgrading open_clip (a test says when it is due)

Parameters are counted on PyTorch's meta device (no memory, no weights); architectures whose text tower
is a Hugging Face transformers model are counted only when its config.json is cached or downloadable.
"""
from __future__ import annotations

import json
import logging

import open_clip
import torch

from clipsearch.models import PRETRAINED_TABLE, open_clip_pretrained, open_clip_version


def parameters(arch: str) -> int | None:
    """The parameter count of `arch`, built on the meta device; None when it cannot be built here."""
    try:
        with torch.device("meta"):
            model = open_clip.create_model(arch, device="meta")
    except (RuntimeError, ImportError, OSError, ValueError) as e:
        print(f"{arch}: not counted ({str(e).splitlines()[0]})")
        return None
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded": none are wanted here
    archs = sorted({w.arch for w in open_clip_pretrained()})
    weights = open_clip_pretrained({arch: n for arch in archs if (n := parameters(arch))})
    rows = ",\n".join(json.dumps(w.to_dict(), ensure_ascii=False) for w in weights)  # a line a tag: short diffs
    PRETRAINED_TABLE.write_text(f'{{"open_clip": {json.dumps(open_clip_version())}, "weights": [\n{rows}\n]}}\n',
                                encoding="utf-8")
    print(f"wrote {len(weights)} tags of {len(archs)} architectures to {PRETRAINED_TABLE}")


if __name__ == "__main__":
    main()
