"""How well "good match" rules separate real matches from the rest (see clipsearch/relevance.py).

Offline by default: the bundled tiny model on held-out renders of its shapes (a seed its training never
drew), searched with "a {colour} {shape}", "a photo of a {colour} {shape}" and their Chinese equivalents
("红色的星星", "一张红色星星的照片"; relevant: the images of that colour and shape), and with nonsense
queries that should get no good match: random letter strings, and captions of everyday photo subjects
the shapes are not (a dog, a beach...). For each rule over the whole library, the precision and recall
of "good" on the real queries, and the share of nonsense queries left with zero good matches. Rules: a
fixed cosine threshold (the best one found here, in hindsight), the query's z-score over the library
(depends on what the library holds), and clipsearch's rules: beat the neutral captions on the same
image (the default for unmeasured models), and the model's own rule (clipsearch.relevance.RULES: a
margin over those captions and a cosine floor). The nonsense strings here are drawn with another seed
than those the tiny model's rule was chosen on: `--choose` prints the rule that maximises recall plus
the shares of nonsense queries with no good match over a grid of margins and floors, with random strings
of that other seed (`CHOOSE_SEED`).

    python benchmarks/bench_relevance.py [--per-class 10] [--model clipsearch-tiny --checkpoint FILE] [--choose]

The last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import string

import numpy as np

from clipsearch.calibration import SUBJECTS
from clipsearch.models import load_encoder, model_spec
from clipsearch.relevance import DEFAULT_RULE, NEUTRAL_CAPTIONS, Rule, good_matches, rule_for
from clipsearch.shapes import BACKGROUNDS, CHINESE, COLOURS, SHAPES, ShapeSpec, article, render
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

HELD_OUT_SEED = 2024  # as benchmarks/bench_zeroshot.py: renders the training never drew


def held_out(per_class: int) -> list[tuple[ShapeSpec, object]]:
    rng = random.Random(HELD_OUT_SEED)
    return [(spec, render(spec, rng, size=64))
            for colour, shape in itertools.product(COLOURS, SHAPES) for _ in range(per_class)
            for spec in [ShapeSpec(colour, shape, rng.choice(list(BACKGROUNDS)))]]


CHOOSE_SEED = 1
"""The random strings a model's rule is chosen on (`--choose`); the figures use seed 2."""


def random_strings(n: int, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    return [" ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))
                     for _ in range(rng.randint(1, 3))) for _ in range(n)]


def other_captions() -> list[str]:
    subjects = [s for s in SUBJECTS if s not in SHAPES]
    return [f"a {s}" for s in subjects] + [f"a picture of a {s} outside" for s in subjects]


def judge(rule: str, scores: np.ndarray, images: np.ndarray, neutral: np.ndarray, param: float | Rule) -> np.ndarray:
    """(queries, images) bool: which images each query's rule calls good."""
    if rule == "cosine":
        return scores > param
    if rule == "library z":
        return (scores - scores.mean(1, keepdims=True)) / scores.std(1, keepdims=True) > param
    return np.stack([good_matches(row, images, neutral, param) for row in scores])


def _shown(param: float | Rule) -> str:
    if isinstance(param, Rule):
        return f"margin {param.margin:+.2f}" + (f", floor {param.floor:.2f}" if param.floor is not None else "")
    return f"{param:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="clipsearch-tiny")
    parser.add_argument("--pretrained")
    parser.add_argument("--checkpoint")
    parser.add_argument("--per-class", type=int, default=10, help="Held-out images per colour and shape [10]")
    parser.add_argument("--choose", action="store_true", help="Print the best margin and floor for the model, "
                        "chosen with random strings of another seed than the figures'")
    add_save_option(parser)
    args = parser.parse_args()

    spec = model_spec(args.model, args.pretrained, args.checkpoint)
    encoder = load_encoder(spec, "cpu")
    shapes = held_out(args.per_class)
    images = np.vstack([encoder.encode_pil([im for _, im in shapes[i:i + 64]]) for i in range(0, len(shapes), 64)])
    pairs = list(itertools.product(COLOURS, SHAPES))
    real = ([f"{article(c)} {c} {s}" for c, s in pairs] + [f"a photo of {article(c)} {c} {s}" for c, s in pairs]
            + [f"{CHINESE[c][0]}的{CHINESE[s][0]}" for c, s in pairs]
            + [f"一张{CHINESE[c][0]}{CHINESE[s][0]}的照片" for c, s in pairs])
    relevant = np.array([[(sp.colour, sp.shape) == pair for sp, _ in shapes] for pair in pairs * 4])
    nonsense = {"random strings": random_strings(40), "other subjects": other_captions()}
    neutral = encoder.encode_texts(list(NEUTRAL_CAPTIONS))
    scores = {name: encoder.encode_texts(texts) @ images.T for name, texts in [("real", real), *nonsense.items()]}

    if args.choose:
        choose(scores["real"], relevant, encoder.encode_texts(random_strings(40, CHOOSE_SEED)) @ images.T,
               scores["other subjects"], images, neutral)
    chosen = rule_for(spec.arch)
    best_cosine = max(np.arange(0.3, 0.9, 0.01), key=lambda t: _recall_plus_rejects(
        judge("cosine", scores["real"], images, neutral, t), relevant, scores, images, neutral, "cosine", t))
    rules = [("cosine", round(float(best_cosine), 2)), ("library z", 2.0), ("library z", 2.5),
             ("neutral", DEFAULT_RULE), ("neutral (model)", chosen)]
    print(f"{spec.label}: {len(shapes)} held-out images, {len(real)} real queries, "
          + ", ".join(f"{len(t)} {n}" for n, t in nonsense.items()))
    print(f"{'rule':16} {'parameters':>22} {'precision':>9} {'recall':>7} "
          + " ".join(f"{'none: ' + n:>21}" for n in nonsense))
    rows = []
    for rule, param in rules:
        good = judge(rule, scores["real"], images, neutral, param)
        hits = (good & relevant).sum()
        row = {"rule": rule, "param": _shown(param), "precision": round(float(hits / max(good.sum(), 1)), 3),
               "recall": round(float(hits / relevant.sum()), 3),
               **{f"none_{n.replace(' ', '_')}": round(float((~judge(rule, scores[n], images, neutral, param)
                                                                .any(axis=1)).mean()), 3) for n in nonsense}}
        rows.append(row)
        print(f"{rule:16} {row['param']:>22} {row['precision']:9.1%} {row['recall']:7.1%} "
              + " ".join(f"{v:21.1%}" for k, v in row.items() if k.startswith("none_")))
    emit({"model": spec.label, "images": len(shapes), "chosen": {"margin": chosen.margin, "floor": chosen.floor},
          "rules": rows}, args)


def choose(real: np.ndarray, relevant: np.ndarray, strings: np.ndarray, others: np.ndarray, images: np.ndarray,
           neutral: np.ndarray) -> None:
    """Print the rule of highest recall plus shares of nonsense queries with no good match (margins -0.30 to
    0.10 and floors 0.30 to 0.90, by 0.01), among those of precision at least 99%; of equals, the one of highest
    margin (the strictest comparison with the neutral captions that costs nothing)."""
    def value(rule: Rule) -> float:
        good = judge("neutral", real, images, neutral, rule)
        if (good & relevant).sum() < 0.99 * good.sum():
            return -1.0
        rejects = [(~judge("neutral", s, images, neutral, rule).any(axis=1)).mean() for s in (strings, others)]
        return float((good & relevant).sum() / relevant.sum() + np.mean(rejects))

    grid = [Rule(round(float(m), 2), round(float(f), 2))
            for m in np.arange(0.1, -0.301, -0.01) for f in np.arange(0.3, 0.901, 0.01)]
    best = max(grid, key=value)
    print(f"chosen with random strings of seed {CHOOSE_SEED}: {_shown(best)} (recall + rejects {value(best):.3f})")


def _recall_plus_rejects(good: np.ndarray, relevant: np.ndarray, scores: dict, images: np.ndarray,
                         neutral: np.ndarray, rule: str, param: float) -> float:
    """Recall on the real queries plus the mean share of nonsense queries with no good match."""
    rejects = [(~judge(rule, s, images, neutral, param).any(axis=1)).mean() for n, s in scores.items() if n != "real"]
    return float((good & relevant).sum() / relevant.sum() + np.mean(rejects))


if __name__ == "__main__":
    main()
