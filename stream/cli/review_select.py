"""`tagstream review select`: the products people should label next, with the reason for each."""

from __future__ import annotations

import argparse
import sys

import orjson

from stream.cli.common import CliError, json_lines, settings_from, settings_options
from stream.cli.options import positive_int


def select_options(p: argparse.ArgumentParser) -> None:
    from stream.service.clients import CLIENT_SETTINGS

    p.add_argument("--products", metavar="FILE",
                   help="product events as JSON lines: a `tagstream tail` dump of the input topic, bare events or "
                        "{id, text} records (default: read the input topic)")
    p.add_argument("--enriched", metavar="FILE",
                   help="the live service's enriched records (a `tail` dump); their tags are the ones scored and "
                        "pre-annotated")
    p.add_argument("--from-enriched-topic", action="store_true",
                   help="read the live service's enriched records from the topic (--enriched-topic) instead")
    p.add_argument("--candidates", metavar="FILE",
                   help="new-tag candidate records (a `tail` dump of tagstream.taxonomy-candidates): tags among "
                        "them score higher")
    p.add_argument("--bundle", help="model bundle to re-score the titles with: adds CRF token entropy, and the tags "
                                    "of products without an enriched record")
    p.add_argument("-n", "--count", type=positive_int, default=200, help="how many products to pick (200)")
    p.add_argument("--max-category-share", type=_share, default=0.25,
                   help="most of the budget one category (category_hint) may take while others have candidates (0.25)")
    p.add_argument("--redundancy", type=_share, default=1.0,
                   help="a title sharing a tag with earlier picks ranks as if its score were this much smaller per "
                        "such pick (1 = off; 0.5 spreads the budget over different doubts)")
    p.add_argument("--density", type=float, default=0.0,
                   help="multiply each score by the title's typicality of the pool (cosine of character bigrams "
                        "with the pool's mean) to this power, so outliers rank lower (0 = off)")
    p.add_argument("--exclude", nargs="*", default=[], metavar="FILE",
                   help="picks or labelled JSONL already sent for review: their products and titles are skipped")
    p.add_argument("--out", required=True, help="picks as JSON lines (`tagstream review push` reads them)")
    settings_options(p, CLIENT_SETTINGS + ("input_topic", "enriched_topic"))


def _share(value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {value!r}") from None
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {value!r}")
    return share


def _topic(args: argparse.Namespace, setting: str) -> list[dict]:
    from stream.service.clients import read_topic

    settings = settings_from(args)
    return read_topic(settings, getattr(settings, setting))


def _excluded(paths: list[str]) -> set[str]:
    from stream.service.review import product_of, title_hash

    out: set[str] = set()
    for path in paths:
        for record in json_lines(path):
            product = product_of(record)
            if product is not None:
                out.add(product["product_id"])
                out.add(title_hash(product["title"]))
    return out


def cmd_select(args: argparse.Namespace) -> int:
    from stream.service import review

    if not args.bundle and args.enriched is None and not args.from_enriched_topic:
        raise CliError("review select needs the live tags (--enriched or --from-enriched-topic), a --bundle to "
                       "re-score the titles, or both")
    raw = json_lines(args.products) if args.products else _topic(args, "input_topic")
    products = review.latest_products(raw)
    if not products:
        raise CliError(f"{args.products or 'the input topic'}: no products with a title")
    live = None
    if args.enriched is not None or args.from_enriched_topic:
        records = json_lines(args.enriched) if args.enriched else _topic(args, "enriched_topic")
        live = review.tags_from_enriched(records)
    drift = review.drift_keys_from(json_lines(args.candidates)) if args.candidates else frozenset()
    if args.bundle:
        from stream.tagging.pipeline import Pipeline

        candidates = review.rescore(Pipeline.load(args.bundle, device="cpu"), products, live)
    else:
        tagged = [p for p in products if (p["product_id"], p.get("version")) in live]
        if not tagged:
            raise CliError("no product has an enriched record of the same version: give --bundle to re-score them")
        candidates = [review.candidate(p, live[(p["product_id"], p.get("version"))], None) for p in tagged]
    picks, report = review.select(candidates, args.count, max_category_share=args.max_category_share,
                                  drift_keys=drift, exclude=_excluded(args.exclude), redundancy=args.redundancy,
                                  density=args.density)
    with open(args.out, "wb") as out:
        for pick in picks:
            out.write(orjson.dumps(pick.to_json()) + b"\n")
    print(f"picked {report['picked']} of {report['candidates']} products into {args.out} (duplicates "
          f"{report['duplicates']}, excluded {report['excluded']}, unreadable {report['unreadable']}, category quota "
          f"{report['quota']}, relaxed {report['quota_relaxed']}); "
          f"per category: {report['per_category']}", file=sys.stderr)
    for pick in picks[:5]:
        print(f"  {pick.score:7.3f}  {pick.candidate.product_id}  {pick.reasons[0]}", file=sys.stderr)
    return 0
