"""Collect the benchmarks' JSON into all.json and write summary.md, one markdown table with the
machine it came from (bench/run_all calls this last):

    python bench/summary.py [--results bench/results] [--started ISO-TIME] [--load-before 0.4]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402

NAMES = ("inference", "stream", "update_mix", "bucketing", "restart_gap", "state_restart", "scale_out", "gpu")


def _load(results: Path) -> dict[str, dict]:
    found = {}
    for name in NAMES:
        path = results / f"{name}.json"
        if path.is_file():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


INT8_F1_DROP = 0.005    # issue #18: int8 may cost at most half a point of held-out micro-F1


def _met(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "**no**")


def _against_batched_pytorch(by: dict[str, dict], result: dict) -> list[tuple]:
    """Issue #18's goals: fp32 >= 1.0x and int8 >= 2.0x batched PyTorch fp32 (and, for what the
    kernels alone do, PyTorch given the serving tagger's token-sized calls)."""
    torch, same = by.get("pytorch, batched"), by.get("pytorch, batched, serving's calls")
    out = []
    for name, target, variant in (("onnxruntime fp32, batched", 1.0, "fp32"), ("onnxruntime int8, batched", 2.0, "int8")):
        row = by.get(name)
        if not (row and torch):
            continue
        ratio = row["events_per_second"] / torch["events_per_second"]
        kernels = f"; vs PyTorch in the same calls {row['events_per_second'] / same['events_per_second']:.2f}x" if same else ""
        change = result.get("int8_f1_change") if variant == "int8" else None
        f1 = f"; F1 change {change:+.3f}" if change is not None else ""
        wider = (result.get("int8_f1_change_on_benchmark_texts") or {}).get("static")
        if variant == "int8" and wider is not None:     # 4x the spans: the change the goal is judged on
            f1 += f" on the held-out texts, {wider:+.3f} on the benchmark texts"
            change = wider
        wanted = f">= {target:.1f}x" + (", F1 drop <= 0.5 point" if change is not None else "")
        met = ratio >= target and (change is None or change >= -INT8_F1_DROP)
        out.append(("model-only (`bench/inference.py`)", f"ORT {variant} (serving tagger) vs batched PyTorch fp32",
                    f"{row['events_per_second']:,.0f} vs {torch['events_per_second']:,.0f} events/s{kernels}{f1}",
                    f"{ratio:.2f}x", wanted, _met(met)))
    best = result.get("best_shapes")
    if best and any(" lanes x " in b["row"] for b in best.values()):    # a lane shape won somewhere
        def shape(row: str) -> str:
            return row.split("batched, ", 1)[1] if "batched, " in row else "one call at a time"

        for variant, target in (("fp32", 1.0), ("int8", 2.0)):
            mine, torch_best = best[variant], best["pytorch"]
            out.append(("model-only (`bench/inference.py`)", f"ORT {variant} vs batched PyTorch fp32, each in its "
                        f"best shape ({shape(mine['row'])}; PyTorch {shape(torch_best['row'])})",
                        f"{mine['events_per_second']:,.0f} vs {torch_best['events_per_second']:,.0f} events/s",
                        f"{mine['ratio_vs_best_pytorch']:.2f}x", f">= {target:.1f}x",
                        _met(mine["ratio_vs_best_pytorch"] >= target)))
    return out


def _smoothing(by: dict[str, dict], result: dict) -> list[tuple]:
    """Static int8 with SmoothQuant against without: speed, F1 change and emission error."""
    smoothed, plain = by.get("onnxruntime int8, batched"), by.get("onnxruntime int8 without smoothing, batched")
    errors = result.get("int8_emission_error") or {}
    if not (smoothed and plain and "static without smoothing" in errors):
        return []
    changes = result.get("int8_f1_change_on_benchmark_texts") or {}
    wider = (f", {changes['static']:+.3f} vs {changes['static without smoothing']:+.3f} on the benchmark texts"
             if changes else "")
    return [("model-only (`bench/inference.py`)", "ORT static int8 with SmoothQuant vs without, same batches",
             f"{smoothed['events_per_second']:,.0f} vs {plain['events_per_second']:,.0f} events/s; F1 change "
             f"{result['int8_f1_change']:+.3f} vs {result['int8_unsmoothed_f1_change']:+.3f} held-out{wider}; "
             f"mean emission error {errors['static']:.4f} vs {errors['static without smoothing']:.4f}",
             f"{smoothed['events_per_second'] / plain['events_per_second']:.2f}x", "—", "—")]


def _baselines(s: dict) -> list[dict]:
    """The stream run's baseline drains; a run from before ``--baselines`` had the producer's only."""
    if s.get("baselines"):
        return list(s["baselines"].values())
    old = s.get("producer_baseline")
    return [{**old, "what": "each output sent at once (linger 0, 16 KiB)",
             "ratio_streaming_to_baseline": s["ratio_streaming_to_producer_baseline"]}] if old else []


def rows(found: dict[str, dict]) -> list[tuple[str, str, str, str, str, str]]:
    """(benchmark, what is compared, numbers, ratio, target, met?) per measured comparison."""
    out = []
    if "inference" in found:
        by = {r["name"]: r for r in found["inference"]["rows"]}
        base, fp32, int8 = (by.get(n) for n in ("pytorch eager, per event", "onnxruntime fp32, batched",
                                                "onnxruntime int8, batched"))
        if base and int8:
            out.append(("model-only (`bench/inference.py`)",
                        f"serving tagger, ORT int8, batches of {int8['batch_size']} vs PyTorch eager per event",
                        f"{int8['events_per_second']:,.0f} vs {base['events_per_second']:,.0f} events/s",
                        f"{int8['ratio_vs_per_event_pytorch']:.1f}x", "—", "—"))
        if fp32 and int8:
            out.append(("model-only (`bench/inference.py`)", "ORT int8 vs ORT fp32, same batches",
                        f"{int8['events_per_second']:,.0f} vs {fp32['events_per_second']:,.0f} events/s; "
                        f"F1 change {found['inference'].get('int8_f1_change') or 0:+.3f}",
                        f"{int8['events_per_second'] / fp32['events_per_second']:.2f}x", "—", "—"))
        out.extend(_against_batched_pytorch(by, found["inference"]))
        out.extend(_smoothing(by, found["inference"]))
    if "stream" in found:
        s = found["stream"]
        ratio = s["ratio_streaming_to_model_only"]
        shape = f", {s['lanes']} lane(s) x {s['threads_per_lane']} thread(s)" if "lanes" in s else ""
        n = len(s.get("rounds") or [])
        rounds = f" (medians of {n} rounds; ratio: the rounds' median)" if n > 1 else " (one round)" if n else ""
        faster = s.get("ratio_streaming_to_faster_pass")     # model-only passes before and after each drain
        faster = f"; against the faster of each drain's two model-only passes: {faster:.2f}" if faster else ""
        out.append(("streaming (`bench/stream.py`)",
                    f"one worker through Kafka vs model-only in the same shape, batch {s['batch']}{shape}",
                    f"{s['streaming_events_per_second']:,.1f} vs {s['model_only_events_per_second']:,.1f} events/s"
                    f"{rounds}{faster}",
                    f"{ratio:.2f}", ">= 0.90", _met(ratio >= 0.9)))
        if s.get("model_only_shapes"):
            best = max(s["model_only_shapes"], key=lambda r: r["events_per_second"])
            shapes = "; ".join(f"{r['lanes']} x {r['threads']}: {r['events_per_second']:,.1f}"
                               for r in s["model_only_shapes"])
            out.append(("streaming (`bench/stream.py`)", "the same worker vs the fastest model-only shape "
                        "(lanes x threads)", f"{s['streaming_events_per_second']:,.1f} events/s; model-only {shapes}",
                        f"{s['ratio_streaming_to_best_model_only']:.2f}", "—", "—"))
        for base in _baselines(s):
            out.append(("streaming (`bench/stream.py`)", f"the worker's settings vs {base['what']}, same events",
                        f"{s['streaming_events_per_second']:,.1f} vs {base['events_per_second']:,.1f} events/s; broker "
                        f"CPU {s['broker_cpu_cores']} vs {base['broker_cpu_cores']} cores{rounds}",
                        f"{base['ratio_streaming_to_baseline']:.2f}x", "—", "—"))
        lanes = s.get("lane_time") or {}
        if lanes.get("model_only") and lanes.get("streaming"):
            split = {mode: " / ".join(f"{lanes[mode][k]:.2f}" for k in ("running", "waiting_for_cpu", "blocked"))
                     for mode in ("model_only", "streaming")}
            out.append(("streaming (`bench/stream.py`)", "an inference lane's time: running / waiting for a CPU / "
                        "blocked (GIL, locks, idle)", f"model-only {split['model_only']}; streaming "
                        f"{split['streaming']}{rounds}", "—", "—", "—"))
        full = s.get("model_only_full_batch", {}).get("p50_ms")
        phases = s.get("latency_phases") or ([s["latency"]] if "bound_ms" in s.get("latency", {}) else [])
        for lat in phases:
            out.append(("latency under load (`bench/stream.py`)",
                        f"p99 end-to-end at {lat.get('load', 0.7):.0%} of max ({lat['rate_events_per_second']} events/s) "
                        f"vs max_wait + 2 x full-batch inference ({s['max_wait_s'] * 1000:.0f} + 2 x {full} ms)",
                        f"p50 / p95 / p99 {lat['p50_ms']:,.0f} / {lat['p95_ms']:,.0f} / {lat['p99_ms']:,.0f} ms; "
                        f"bound {lat['bound_ms']:,.0f} ms",
                        f"{lat['p99_ms'] / lat['bound_ms']:.2f} of bound",
                        *(("<= 1.0", _met(lat["p99_within_bound"])) if round(lat.get("load", 0.7), 2) == 0.7
                          else ("— (the goal is set at 70%)", "—"))))
        if s.get("profile"):
            p = s["profile"]
            top = "; ".join(f"{c['component']} {c['share']:.0%}" for c in p["top_outside_model"])
            out.append(("profile (`bench/stream.py --profile`)", "busy samples in the model vs outside it",
                        f"model {p['model_share']:.0%}; top outside: {top}", "—", "—", "—"))
    if "update_mix" in found:
        u = found["update_mix"]
        on, off = (next(r for r in u["runs"] if r["skip_unchanged"] is flag) for flag in (True, False))
        out.append(("update mix (`bench/update_mix.py`)",
                    f"content-hash skipping on vs off, {1 - u['text_share']:.0%} of updates price/stock only",
                    f"{on['events_per_second']:,.1f} vs {off['events_per_second']:,.1f} updates/s; model products "
                    f"{on['model_products']:,} vs {off['model_products']:,} ({u['model_calls_saved_share']:.0%} saved)",
                    f"{u['ratio_skip_on_to_off']:.2f}x", f">= {u['target_ratio']:.0f}x", _met(u["target_met"])))
    if "bucketing" in found:
        b = found["bucketing"]
        arrival, bucketed = (next(r for r in b["rows"] if r["bucket"] is flag) for flag in (False, True))
        out.append(("length bucketing (`bench/bucketing.py`)",
                    f"sorted-and-bucketed vs arrival-order calls of {b['batch']} windows, "
                    f"{b['texts']['long_share']:.0%} long descriptions",
                    f"padding {bucketed['padding_share']:.0%} vs {arrival['padding_share']:.0%}; "
                    f"{bucketed['events_per_second']:,.1f} vs {arrival['events_per_second']:,.1f} texts/s",
                    f"{b['ratio_events_per_second']:.2f}x", "—", "—"))
    if "restart_gap" in found:
        r = found["restart_gap"]
        dyn, static = (r["modes"][m]["gap"] for m in ("dynamic", "static"))
        out.append(("restart gap (`bench/restart_gap.py`)",
                    f"kill -9 + restart to first output, dynamic vs static membership, session timeout "
                    f"{r['session_timeout_s']:.0f} s, {r['repeats']} cycles",
                    f"p50 {dyn['p50_ms']:,} vs {static['p50_ms']:,} ms (static max {static['max_ms']:,} ms)",
                    f"{r['ratio_dynamic_to_static']:.1f}x", f"static <= {r['target_ms']:,} ms", _met(r["target_met"])))
    if "state_restart" in found:
        st = found["state_restart"]
        mem, rocks = (st["stores"][m]["restart"] for m in ("memory", "rocksdb"))
        out.append(("state restart (`bench/state_restart.py`)",
                    f"kill -9 + restart to first output with {st['products']:,} products of state, memory vs RocksDB",
                    f"{mem['first_output_ms']:,} vs {rocks['first_output_ms']:,} ms; replayed "
                    f"{mem['replayed_records']:,} vs {rocks['replayed_records']:,} records",
                    f"{st['ratio_memory_to_rocksdb_restart']:.1f}x", "—", "—"))
    if "scale_out" in found:
        out.append(_scale_out_row(found["scale_out"]))
    if "gpu" in found:
        g = found["gpu"]
        best = g.get("best_model_only")
        where = (g.get("machine") or {}).get("gpu") or "no GPU"
        if best:
            out.append((f"GPU (`bench/gpu.sh`, {where})",
                        f"{g.get('model', {}).get('name', 'model')} fp16, sequence {g.get('sequence_length')}, "
                        f"best engine and batch ({best['engine']}, batch {best['batch']})",
                        f"{best['events_per_second']:,.0f} events/s", "—",
                        f">= {g.get('target_events_per_second', 20000):,} events/s", _met(g.get("target_met"))))
        e2e = g.get("serving_end_to_end")
        if e2e and e2e.get("events_per_second"):
            out.append((f"GPU serving tagger (`bench/gpu.sh`, {where})", e2e.get("engine", ""),
                        f"{e2e['events_per_second']:,.0f} products/s ({e2e['texts_per_second']:,.0f} texts/s) end to "
                        f"end; model {e2e['model_share']:.0%} of the time", "—", "—", "—"))
    return out


def _scale_out_row(s: dict) -> tuple[str, str, str, str, str, str]:
    two, one = s["modes"]["two_workers"], s["modes"]["one_worker"]
    split = " + ".join(str(len(p)) for p in two["partition_split"])
    return ("scale-out (`bench/scale_out.py`)",
            f"two {s['threads_per_worker']}-thread workers vs one, {s['partitions']} partitions "
            f"(window: both assigned to last output)",
            f"{two['window_events_per_second']:,.1f} vs {one['window_events_per_second']:,.1f} events/s; "
            f"lost {s['lost']}, duplicates {s['duplicates']}; partitions {split}",
            f"{s['ratio_two_to_one']:.2f}x", f">= {s['target_ratio']}x", _met(s["target_met"]))


def header(found: dict[str, dict], started: str | None, load_before: float | None) -> str:
    """The machine: CPU model, cores, RAM, onnxruntime version, provider; date; load average."""
    m = machine()
    providers = next((r["machine"].get("providers") for r in found.values()
                      if r.get("benchmark") != "gpu" and r.get("machine", {}).get("providers")), None)
    threads = next((r["machine"].get("threads") for r in found.values()
                    if r.get("benchmark") != "gpu" and r.get("machine", {}).get("threads")), None)
    when = started or datetime.now(timezone.utc).isoformat(timespec="minutes")
    load = f"load average {load_before} before, {m['load_average_1m']} after" if load_before is not None else \
        f"load average {m['load_average_1m']}"
    return (f"Measured {when} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, "
            f"onnxruntime {m['onnxruntime']} ({', '.join(providers or ['CPUExecutionProvider'])}, "
            f"{threads or 'default'} threads), Python {m['python']}; {load}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--started", help="when the run started (ISO time)")
    parser.add_argument("--load-before", type=float, help="1-minute load average before the run")
    args = parser.parse_args()
    results = Path(args.results)
    found = _load(results)
    if not found:
        sys.exit(f"{results}: no benchmark results (expected {', '.join(n + '.json' for n in NAMES)})")
    table = ["| benchmark | what is compared | numbers | ratio | target | met? |", "|---|---|---|---:|---|---|"]
    table += ["| " + " | ".join(row) + " |" for row in rows(found)]
    text = header(found, args.started, args.load_before) + "\n\n" + "\n".join(table) + "\n"
    (results / "summary.md").write_text(text, encoding="utf-8")
    combined = {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                "started": args.started, "load_before": args.load_before, "results": found}
    (results / "all.json").write_text(json.dumps(combined, indent=1), encoding="utf-8")
    print(text)
    print(f"wrote {results / 'summary.md'} and {results / 'all.json'}")


if __name__ == "__main__":
    main()
