"""Length bucketing, model-only: sorted-and-bucketed batches against arrival-order batches on a mix
of short titles and long descriptions, the same serving tagger and texts, in one run:

    python bench/bucketing.py [--bundle DIR] [--texts 2000] [--long-share 0.3] [--chunk 128] [--batch 64]

Texts arrive in chunks of --chunk (a worker batch); each chunk is cut into model calls of --batch
windows, either in arrival order or sorted by length. Reports the padding share (padded positions /
all positions) and events/s (texts/s) each way, and their ratios; writes bench/results/bucketing.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, percentiles  # noqa: E402
from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json  # noqa: E402
from stream.tagging.decode import plan_batches  # noqa: E402
from stream.tagging.tagger import Tagger  # noqa: E402
from stream.tagging.tokenization import TextEncoder  # noqa: E402

SHARED_BUNDLE = ROOT / "bench" / ".cache" / "minilm-bundle"


def text_mix(n: int, long_share: float, seed: int) -> list[str]:
    """Short titles and long descriptions (several synthetic descriptions joined, as product pages
    have), shuffled into one arrival order."""
    rng = random.Random(seed)
    records = generate(load_taxonomy_json(DEMO_TAXONOMY), n * 4, seed=seed, lang="en", products=True)
    descriptions = iter(r["description"] for r in records if r["description"])
    texts = []
    for record in records[:n]:
        if rng.random() < long_share:
            texts.append(" ".join(next(descriptions) for _ in range(rng.randint(3, 8))))
        else:
            texts.append(record["title"])
    return texts


def batches_of(encoder: TextEncoder, texts: list[str], batch: int, bucket: bool) -> list[list[int]]:
    """Window lengths per model call, as `stream.tagging.decode.tag_units` forms the calls."""
    windows = [w for u in encoder.units(texts) for w in encoder.windows(u)]
    plan = plan_batches(windows, batch) if bucket else [
        list(range(i, min(i + batch, len(windows)))) for i in range(0, len(windows), batch)]
    return [[len(windows[i].input_ids) for i in call] for call in plan]


def padding(encoder: TextEncoder, chunks: list[list[str]], batch: int, bucket: bool) -> dict:
    padded = total = calls = 0
    for chunk in chunks:
        for lengths in batches_of(encoder, chunk, batch, bucket):
            total += len(lengths) * max(lengths)
            padded += len(lengths) * max(lengths) - sum(lengths)
            calls += 1
    return {"model_calls": calls, "positions": total, "padded_positions": padded,
            "padding_share": round(padded / total, 4)}


def one_pass(tagger: Tagger, chunks: list[list[str]], bucket: bool) -> tuple[float, list[float]]:
    """Seconds for all chunks, and each chunk's milliseconds."""
    calls = []
    start = time.perf_counter()
    for chunk in chunks:
        t0 = time.perf_counter()
        tagger.tag_texts(chunk, bucket=bucket)
        calls.append((time.perf_counter() - t0) * 1000)
    return time.perf_counter() - start, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(SHARED_BUNDLE), help="default: the bundle bench/inference.py built")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--long-share", type=float, default=0.3, help="share of long descriptions among the texts")
    parser.add_argument("--chunk", type=int, default=128, help="texts per tagger call (a worker batch's texts)")
    parser.add_argument("--batch", type=int, default=64, help="windows per model call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=301)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"{bundle}: no bundle; run bench/inference.py first (it leaves one there) or pass --bundle")
    if not 0 < args.long_share < 1:
        sys.exit(f"--long-share must be in (0, 1), got {args.long_share}")
    if args.texts < args.chunk or args.chunk < 1 or args.batch < 1:
        sys.exit(f"--texts ({args.texts}) must be at least --chunk ({args.chunk}), both positive, and --batch positive")

    texts = text_mix(args.texts, args.long_share, args.seed)
    chunks = [texts[i:i + args.chunk] for i in range(0, len(texts), args.chunk)]
    tagger = Tagger.load(bundle, variant=args.variant, device="cpu", threads=args.threads, batch_size=args.batch)
    tokens = [len(u.token_ids) for u in tagger.encoder.units(texts)]
    modes = {"arrival order": False, "sorted and bucketed": True}
    for bucket in modes.values():
        for chunk in chunks[:2]:
            tagger.tag_texts(chunk, bucket=bucket)  # warm-up
    passes: dict[str, list[float]] = {name: [] for name in modes}
    calls: dict[str, list[float]] = {name: [] for name in modes}
    # Passes alternate between the modes, so a change in the machine's load hits both alike.
    for _ in range(args.repeats):
        for name, bucket in modes.items():
            seconds, chunk_ms = one_pass(tagger, chunks, bucket)
            passes[name].append(seconds)
            calls[name].extend(chunk_ms)
    rows = {name: {"bucket": bucket, **padding(tagger.encoder, chunks, args.batch, bucket),
                   "events_per_second": round(len(texts) / min(passes[name]), 1),
                   "events_per_second_median": round(len(texts) / float(np.median(passes[name])), 1),
                   "per_chunk": percentiles(calls[name])}
            for name, bucket in modes.items()}
    arrival, bucketed = rows["arrival order"], rows["sorted and bucketed"]
    result = {
        "benchmark": "bucketing",
        "machine": machine(args.threads, tagger.providers),
        "bundle": str(bundle), "variant": args.variant, "chunk": args.chunk, "batch": args.batch,
        "texts": {"count": len(texts), "long_share": args.long_share, "mean_tokens": round(float(np.mean(tokens)), 1),
                  "p50_tokens": int(np.percentile(tokens, 50)), "max_tokens": int(max(tokens)),
                  "max_length": tagger.encoder.max_length},
        "rows": [{"name": k, **v} for k, v in rows.items()],
        "ratio_events_per_second": round(bucketed["events_per_second"] / arrival["events_per_second"], 2),
        "padding_share_reduction": round(arrival["padding_share"] - bucketed["padding_share"], 4),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bucketing.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"texts: {len(texts)} ({args.long_share:.0%} long), tokens mean {result['texts']['mean_tokens']}, "
          f"max {result['texts']['max_tokens']}; chunks of {args.chunk} texts, model calls of {args.batch} windows")
    print(f"{'batches':<22}{'padding':>9}{'calls':>7}{'events/s':>10}{'p50 ms/chunk':>14}")
    for name, row in rows.items():
        print(f"{name:<22}{row['padding_share']:>9.1%}{row['model_calls']:>7}{row['events_per_second']:>10.1f}"
              f"{row['per_chunk']['p50_ms']:>14}")
    print(f"bucketed / arrival order: {result['ratio_events_per_second']:.2f}x events/s, padding share "
          f"{arrival['padding_share']:.1%} -> {bucketed['padding_share']:.1%}")
    print(f"wrote {out / 'bucketing.json'}")


if __name__ == "__main__":
    main()
