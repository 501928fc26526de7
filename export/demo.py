"""The training side of `tagstream demo`: the cached demo bundle and the synthetic product feed.

Reached only from the CLI, which hands both to ``stream.service.demo.Demo``; it trains and exports, so it
lives with the exporter (export may import model/, the service may import neither).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import orjson

from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json



class DemoBundleError(RuntimeError):
    """The demo model cannot be made here; the message says what to install."""


def demo_bundle(cache: Path, say: Callable[[str], None]) -> Path:
    """The cached demo bundle, trained and exported on first use (about a minute on 2 cores)."""
    bundle = cache / "bundle"
    if (bundle / "manifest.json").is_file():
        say(f"using the cached demo model {bundle}")
        return bundle
    try:
        from export.bundle import export_bundle
        from export.config import ExportConfig
        from model.train import TrainConfig, train
    except ModuleNotFoundError as err:
        raise DemoBundleError(f"the first demo run trains a model and needs the training extra ({err.name} is missing): "
                        f"pip install -e '.[train]'") from None
    cache.mkdir(parents=True, exist_ok=True)
    taxonomy = load_taxonomy_json(DEMO_TAXONOMY)
    for name, n, seed in (("train", 2000, 11), ("dev", 300, 12)):
        records = generate(taxonomy, n, seed=seed, lang="mixed")
        (cache / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    say("training the demo model (2,000 synthetic zh/en titles, once; cached for the next run)")
    train(TrainConfig(train=(str(cache / "train.jsonl"),), dev=str(cache / "dev.jsonl"),
                      out=str(cache / "checkpoint"), layers=2, hidden=64, heads=2, epochs=4, batch_size=16,
                      vocab_size=3000, name="tagstream-demo", taxonomy=str(DEMO_TAXONOMY)), log=say)
    export_bundle(ExportConfig(checkpoint=str(cache / "checkpoint"), out=str(bundle), int8=True, version="1"),
                  log=say)
    return bundle


def product_feed(seed: int = 1000) -> Iterator[dict]:
    """Synthetic zh/en products without end, 200 per generator seed."""
    taxonomy = load_taxonomy_json(DEMO_TAXONOMY)
    while True:
        yield from generate(taxonomy, 200, seed=seed, lang="mixed", products=True)
        seed += 1
