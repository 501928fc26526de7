"""Where a worker's time goes, from py-spy's raw (collapsed-stack) output: model vs the rest.

    python bench/profile_summary.py bench/results/stream-profile.txt
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

MODEL = "model (onnxruntime session.run)"
MODEL_FRAME = re.compile(r"onnxruntime_inference_collection\.py")
IDLE = "idle (waiting in select, on a lock or a queue)"
# py-spy counts a thread blocked in these as active on some kernels; they are waits, not costs.
IDLE_LEAF = re.compile(r"^(\w+\.)?select \(selectors\.py|^wait \(threading\.py|^_wait_for_tstate_lock|"
                       r"^get \(queue\.py|^_worker \(concurrent/futures/thread\.py")
# In priority order: a stack belongs to the first component any of its frames names, so a tokenizer
# call made by enrich counts as tokenization and a socket write made by aiokafka as Kafka.
COMPONENTS: list[tuple[str, re.Pattern]] = [
    ("tokenization (tokenizers + unit grouping, windows, padding)", re.compile(r"stream/tagging/tokenization\.py|tokenizers/")),
    ("lexicon features", re.compile(r"stream/tagging/lexicon\.py")),
    ("CRF decoding (numpy Viterbi, marginals)", re.compile(r"stream/tagging/crf\.py")),
    ("span assembly (decode, spans)", re.compile(r"stream/tagging/decode\.py|stream/tagging/spans\.py")),
    ("drift window and profile", re.compile(r"stream/service/drift\.py|stream/tagging/profile\.py|observe \(stream/service/worker\.py")),
    ("taxonomy lookup", re.compile(r"stream/tagging/taxonomy\.py")),
    ("event parsing and output records (orjson, hashing)", re.compile(r"stream/service/events\.py")),
    ("enrich bookkeeping", re.compile(r"stream/service/enrich\.py")),
    ("Faust tables (state, changelog)", re.compile(r"faust/tables/|faust/stores/")),
    ("Kafka client (aiokafka: fetch, produce, protocol, socket I/O)", re.compile(r"aiokafka/|kafka/")),
    ("Faust streams, agents and consumer", re.compile(r"faust/|mode/")),
    ("metrics (prometheus_client)", re.compile(r"prometheus_client/")),
    ("worker glue (stream/service/worker.py)", re.compile(r"stream/service/worker\.py")),
    ("asyncio event loop", re.compile(r"asyncio/|selectors\.py|uvloop")),
]
OTHER = "other (interpreter, threads, logging)"


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def component(frames: list[str]) -> str:
    if any(MODEL_FRAME.search(f) for f in frames):
        return MODEL  # everything under session.run, whatever native frames it shows
    if IDLE_LEAF.search(frames[-1]):
        return IDLE
    for name, pattern in COMPONENTS:
        if any(pattern.search(f) for f in frames):
            return name
    return OTHER


def summarise(path: Path, top: int = 10) -> dict:
    """Busy samples per component (shares of busy samples), the model's share, the three costliest
    components outside the model and the costliest leaf functions outside it."""
    by_component: Counter = Counter()
    leaves: Counter = Counter()
    for frames, count in parse(path):
        name = component(frames)
        by_component[name] += count
        if name not in (MODEL, IDLE):
            leaves[frames[-1]] += count
    idle = by_component.pop(IDLE, 0)
    busy = sum(by_component.values())
    if not busy:
        return {"samples": idle, "busy_samples": 0, "model_share": None, "components": [],
                "top_outside_model": [], "leaf_functions_outside_model": []}
    components = [{"component": name, "samples": n, "share": round(n / busy, 3)}
                  for name, n in by_component.most_common()]
    return {"samples": busy + idle, "busy_samples": busy, "idle_samples": idle,
            "model_share": round(by_component[MODEL] / busy, 3), "components": components,
            "top_outside_model": [c for c in components if c["component"] != MODEL][:3],
            "leaf_functions_outside_model": [{"frame": f, "share": round(n / busy, 3)}
                                             for f, n in leaves.most_common(top)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="py-spy record --format raw output")
    args = parser.parse_args()
    path = Path(args.profile)
    if not path.is_file():
        sys.exit(f"{path}: no such file")
    summary = summarise(path)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
