"""Writing a library's text tower as ONNX files (read back by textmodel.py, without torch).

open_clip's `CLIP.encode_text` runs on the full context (77 tokens); the tower exported here takes
token ids cut after the end-of-text token, which gives the same vector (attention is causal and
the vector is read at the end token) for a fraction of the work. Its attention is spelled out
with `scaled_dot_product_attention` so that the exported graph keeps the batch and the length
dynamic (nn.MultiheadAttention's traced graph fixes both).

Models whose tokenizer is a Hugging Face one (open_clip's `HFTokenizer`: the multilingual XLM-RoBERTa, NLLB and
SigLIP 2 models among them) are exported whole, `encode_text` as it is, on token ids padded to the full context as
open_clip pads them (some of their towers attend to the padding), with transformers' own tokenizer (its
`tokenizers` backend) and the name of open_clip's cleaning step beside it. Every exported tower is checked against
the model on a few texts, English and Chinese, before it is written: one that differs (a trace that a model's
control flow fooled) is not written, and queries keep using the model.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import json

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer
from open_clip.transformer import ResidualAttentionBlock

from .encoder import Encoder
from .models import load_encoder
from .textmodel import CLEANING, CONFIG_FILE, GRAPH_FILE, TEXT_MODEL_PREFIX, TOKENIZER_FILE, TextModel, text_model_dir

OPSET = 17
PROBES = ["a photo of a dog", "红色的星星", "une étoile rouge sur fond blanc, près d'un cercle bleu"]
"""Texts the exported tower must encode as the model does (English, Chinese, French with punctuation)."""
PROTOBUF_LIMIT_BYTES = 2**31 - 2**26
"""Weights up to this size (2 GB less some room for the graph) fit one ONNX protobuf message, in memory."""
TOLERANCE = 1e-4
"""The largest difference, per vector component, allowed between the exported tower and the model."""


def exportable(encoder: Encoder) -> bool:
    """Whether the encoder's text side is open_clip's CLIP text transformer with its BPE tokenizer."""
    model, tokenizer = encoder.model, encoder.tokenizer
    return (isinstance(model, CLIP) and model.text_pool_type == "argmax" and model.transformer.batch_first
            and all(type(b) is ResidualAttentionBlock for b in model.transformer.resblocks)
            and isinstance(tokenizer, SimpleTokenizer) and tokenizer.reduction_fn is None
            and tokenizer.clean_fn is open_clip.tokenizer._clean_lower)


def hf_cleaning(encoder: Encoder) -> str | None:
    """The name of open_clip's cleaning step (a key of `CLEANING`) when the encoder's tokenizer is a Hugging Face
    fast tokenizer used plainly (no `clips` mode, no stripped separator), else None."""
    tokenizer = encoder.tokenizer
    if not (isinstance(tokenizer, HFTokenizer) and not tokenizer.tokenizer_mode and not tokenizer.strip_sep_token
            and hasattr(tokenizer.tokenizer, "backend_tokenizer") and tokenizer.context_length):
        return None
    return next((name for name in CLEANING if tokenizer.clean_fn is open_clip.tokenizer.get_clean_fn(name)), None)


def export_text_model(directory: Path, encoder: Encoder) -> Path | None:
    """Write the text tower of `encoder` into the library at `directory`, replacing any other model's.

    Returns its folder, or None when the model's text side cannot be exported (see `exportable` and `hf_cleaning`)
    or the exported tower does not encode `PROBES` as the model does. The files appear all at once (written to a
    temporary folder, then renamed). Raises OSError when the library cannot be written, RuntimeError when the
    exporter cannot trace the model.
    """
    cleaning = hf_cleaning(encoder)
    if not exportable(encoder) and cleaning is None:
        return None
    if encoder.device.type != "cpu" or encoder.dtype != torch.float32:
        encoder = load_encoder(encoder.spec, "cpu", "fp32")
    target = text_model_dir(directory, encoder.spec)
    remove_abandoned_staging(directory)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=directory))
    try:
        if cleaning is None:
            _hf_tokenizer(encoder.tokenizer).save(str(staging / TOKENIZER_FILE))
            _export_graph(_TextTower(encoder.model).eval(), staging / GRAPH_FILE,
                          encoder.tokenizer(["a photo of a dog"])[:, :8], dynamic_length=True)
        else:
            _fast_tokenizer(encoder.tokenizer).save(str(staging / TOKENIZER_FILE))
            (staging / CONFIG_FILE).write_text(json.dumps({"cleaning": cleaning}), encoding="utf-8")
            _export_graph(_FullContextTower(encoder.model).eval(), staging / GRAPH_FILE,
                          encoder.tokenizer(PROBES[:2]), dynamic_length=False)
        if not _encodes_as(staging, encoder):
            return None
        staging.chmod(0o755)  # mkdtemp's folder is private; the library's readers may be other users
        for file in staging.iterdir():
            file.chmod(0o644)
        for old in directory.glob(TEXT_MODEL_PREFIX + "*"):
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


STAGING_PREFIX = ".text-model-"
"""Folders being written: `.text-model-PID-XXXXXXXX`, PID the writing process's, renamed to `text_model_dir` when
complete."""


def remove_abandoned_staging(directory: Path) -> None:
    """Remove the staging folders in the library at `directory` whose writing process is gone (an export killed or
    interrupted midway); those of live processes (a search writing the tower beside an index run) are left."""
    for folder in Path(directory).glob(STAGING_PREFIX + "*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not (pid.isdigit() and _running(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class _TextTower(torch.nn.Module):
    """`CLIP.encode_text` for token ids (N, L) cut after the end token, L ≤ the context length."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.blocks = model.transformer.resblocks
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        self.register_buffer("attn_mask", model.attn_mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        mask = self.attn_mask[:length, :length]
        for block in self.blocks:
            x = x + block.ls_1(_attention(block.attn, block.ln_1(x), mask))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
        if isinstance(self.text_projection, torch.nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection


def _attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """nn.MultiheadAttention's self-attention (batch first) with an additive mask."""
    n, length, width = x.shape
    heads = attn.num_heads
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2)
               for t in F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, width))


class _FullContextTower(torch.nn.Module):
    """The model's own `encode_text`, for token ids (N, context length) padded as open_clip pads them."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


def _encodes_as(folder: Path, encoder: Encoder) -> bool:
    """Whether the tower written in `folder` gives `encoder`'s token ids and vectors for `PROBES`."""
    tower = TextModel.read(folder)
    if tower is None:
        return False
    tokens = encoder.tokenizer(PROBES).numpy()
    ours = tower.tokenize(PROBES)
    if ours.shape[1] < tokens.shape[1]:  # the CLIP tower's ids are cut after the longest text's end token
        tokens = tokens[:, :ours.shape[1]]
    return bool((ours == tokens).all()) and float(np.abs(tower.encode(PROBES) - encoder.encode_texts(PROBES)).max()
                                                  ) <= TOLERANCE


def _export_graph(tower: torch.nn.Module, path: Path, example: torch.Tensor, dynamic_length: bool) -> None:
    """The ONNX graph at `path` as ONNX Runtime's CPU provider optimises it, its weights in `path`.data
    (memory-mapped when loaded). Optimising here spares every query the optimisation passes (textmodel.py
    loads the graph with them off); the extended level's fusions run on any CPU, unlike the layout level's."""
    import onnxruntime

    # The traced graph stays in memory where protobuf can hold it (2 GB): writing it out and reading it back cost
    # ViT-B-32's export a second of its six. A larger tower is traced to a file, its weights beside it.
    in_memory = sum(p.numel() * p.element_size() for p in tower.parameters()) < PROTOBUF_LIMIT_BYTES
    traced = io.BytesIO() if in_memory else path.with_name("traced.onnx")
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on how it spells indexing
        torch.onnx.export(tower, (example,), traced if in_memory else str(traced), input_names=["tokens"],
                          output_names=["features"],
                          dynamic_axes={"tokens": {0: "batch", 1: "length"} if dynamic_length else {0: "batch"},
                                        "features": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", path.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    onnxruntime.InferenceSession(traced.getvalue() if in_memory else str(traced), options,
                                 providers=["CPUExecutionProvider"])
    if not in_memory:
        traced.unlink()


def _fast_tokenizer(tokenizer: HFTokenizer):
    """transformers' tokenizer behind open_clip's `HFTokenizer` as a `tokenizers.Tokenizer` that truncates and pads
    to the context length as open_clip's call does (after its cleaning step, see textmodel.CLEANING)."""
    from tokenizers import Tokenizer

    hf = tokenizer.tokenizer
    fast = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    fast.enable_truncation(max_length=tokenizer.context_length)
    fast.enable_padding(length=tokenizer.context_length, pad_id=hf.pad_token_id, pad_token=hf.pad_token)
    return fast


def _hf_tokenizer(tokenizer: SimpleTokenizer):
    """open_clip's CLIP tokenizer as a `tokenizers.Tokenizer` for the words of a text (see textmodel.words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    hf = Tokenizer(models.BPE(vocab=dict(tokenizer.encoder), merges=merges, end_of_word_suffix="</w>"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    sot, eot = "<start_of_text>", "<end_of_text>"
    hf.add_special_tokens([sot, eot])
    hf.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}",
        special_tokens=[(sot, tokenizer.sot_token_id), (eot, tokenizer.eot_token_id)])
    hf.enable_truncation(max_length=tokenizer.context_length)
    hf.enable_padding(pad_id=0, pad_token="!")
    return hf
