"""The benchmarks' own logic: the update mix they send, the padding they count, the profile they
summarise, the accuracy table they build from finished runs, the lane shape inference is measured in."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import orjson

from bench import accuracy
from bench.bucketing import padding
from bench.profile_summary import IDLE, MODEL, summarise
from bench.update_mix import update_mix
from stream.service.events import Limits, RawEvent, parse_event
from stream.tagging.tokenization import TextEncoder


def _parse(value: bytes):
    return parse_event(RawEvent(None, value, "in", 0, 0), Limits(key_policy="value"))


def test_price_and_stock_updates_keep_the_content_hash_and_text_updates_change_it():
    initial, updates, text_changes = update_mix(products=40, updates=400, text_share=0.2, seed=7)
    last = {}
    for _, value in initial:
        event = _parse(value)
        last[event.product_id] = event.content_hash
    unchanged = 0
    for _, value in updates:
        data, event = orjson.loads(value), _parse(value)
        assert {"price", "stock"} <= data.keys() and event.version > 1
        unchanged += event.content_hash == last[event.product_id]
        last[event.product_id] = event.content_hash
    assert unchanged == len(updates) - text_changes
    assert 0.1 < text_changes / len(updates) < 0.3


def test_bucketing_pads_less_than_arrival_order(wordpiece):
    encoder = TextEncoder(wordpiece, max_length=32, stride=4)
    short, long = "Nike shoes", "UNIQLO women's cotton T-shirt, white, size M — free shipping! " * 2
    chunk = [short, long, short, long]
    arrival = padding(encoder, [chunk], batch=2, bucket=False)
    bucketed = padding(encoder, [chunk], batch=2, bucket=True)
    assert arrival["positions"] - arrival["padded_positions"] == bucketed["positions"] - bucketed["padded_positions"]
    assert bucketed["padded_positions"] == 0 < arrival["padded_positions"]


def test_profile_summary_separates_model_idle_and_the_rest(tmp_path):
    trace = tmp_path / "raw.txt"
    trace.write_text("\n".join([
        "process_one (stream/service/worker.py:1);run (onnxruntime/capi/onnxruntime_inference_collection.py:275) 60",
        "enrich (stream/service/enrich.py:9);tag_texts (stream/tagging/tagger.py:3);units (stream/tagging/tokenization.py:80) 10",
        "_sender_routine (aiokafka/producer/sender.py:1);write (asyncio/selector_events.py:1057) 20",
        "_run_once (asyncio/base_events.py:1);EpollSelector.select (selectors.py:468) 500",
        "viterbi_decode (stream/tagging/crf.py:73) 10",
    ]) + "\n", encoding="utf-8")
    summary = summarise(trace)
    shares = {c["component"]: c["share"] for c in summary["components"]}
    assert summary["busy_samples"] == 100 and summary["idle_samples"] == 500 and IDLE not in shares
    assert summary["model_share"] == shares[MODEL] == 0.6
    top = [c["component"] for c in summary["top_outside_model"]]
    assert top[0].startswith("Kafka client") and {t.split(" ")[0] for t in top[1:]} == {"tokenization", "CRF"}


def test_the_accuracy_table_is_built_from_finished_runs_of_rows_still_defined(tmp_path, monkeypatch):
    monkeypatch.setattr(accuracy, "CACHE", tmp_path)
    row, other = accuracy.ROWS["zh"][:2]
    for job, f1 in zip(accuracy.jobs_for("zh", [row], [13, 14, 15]) + accuracy.jobs_for("zh", [other], [13]),
                       (0.60, 0.64, 0.62, 0.70)):
        out = Path(job["out"])   # under tmp_path
        out.mkdir(parents=True)
        stale = {**job, "row": {**job["row"], "fine_tune": 1}} if job["row"] is other else job
        (out / "run.json").write_text(json.dumps({
            "job": stale, "dev_f1": f1 + 0.01, "epochs": 3, "cpu_seconds": {"total": 100 + f1},
            "test": {"micro": {"f1": f1, "precision": f1, "recall": f1}}}), encoding="utf-8")
    rows = accuracy.summarise("zh", accuracy.finished("zh"))
    assert [r["name"] for r in rows] == [row["name"]]            # the other row's run is of an older definition
    assert rows[0]["seeds"] == [13, 14, 15] and rows[0]["test_f1"] == [0.6, 0.64, 0.62]

    # An earlier results file (committed; its runs are no longer cached) keeps the rows this cache lacks.
    results = tmp_path / "results"
    results.mkdir()
    earlier = {**rows[0], "seeds": [13], "dev_f1": [0.5], "test_f1": [0.5]}
    (results / "accuracy-zh.json").write_text(json.dumps({
        "data": "zh", "machine": "Linux", "processor": "Older CPU",
        "rows": [{**earlier, "name": other["name"], "row": other}, earlier,
                 {**earlier, "name": "a row since removed", "row": {"name": "a row since removed"}}]}))
    text = accuracy.write("zh", results)
    assert f"| {row['name']} | 3 | 0.630 ± 0.020 | **0.620 ± 0.020** |" in text     # the cache wins
    assert f"| {other['name']} | 1 | 0.500 | **0.500** |" in text and "| Older CPU |" in text
    assert "since removed" not in text
    assert text.index(row["name"]) < text.index(other["name"])                       # in ROWS order
    assert [r["name"] for r in json.loads((results / "accuracy-zh.json").read_text())["rows"]] == [
        row["name"], other["name"]]


def test_the_weak_labels_table_gathers_cached_runs_per_dictionary_variant(tmp_path, monkeypatch):
    from bench import weak_labels

    monkeypatch.setattr(weak_labels, "CACHE", tmp_path)
    gold_only, (mixed, *_) = weak_labels.ROWS[2], [r for r in weak_labels.ROWS if r[1] and r[2]]

    def run(folder: str, row, seed: int, f1: float, **job) -> None:
        name, gold, weak, unmatched = row
        (tmp_path / "zh" / folder).mkdir(parents=True)
        (tmp_path / "zh" / folder / "row.json").write_text(json.dumps(
            {"job": {"name": name, "gold": gold, "weak": weak, "unmatched": unmatched, "seed": seed, **job},
             "test_f1": f1}))
    run("s13-2", gold_only, 13, 0.50)
    run("s14-2", gold_only, 14, 0.52)
    run("s13-3", mixed, 13, 0.40, dictionary="checked against gold")
    run("s13-3-confirmed", mixed, 13, 0.30, dictionary="confirmed by gold")
    run("s14-3-confirmed-w0.3", mixed, 14, 0.35, dictionary="confirmed by gold", weak_weight=0.3)
    variants, rows = weak_labels.gathered("zh")
    assert variants == ["checked dictionary", "confirmed forms only", "confirmed forms only, weak weight 0.3"]
    text = weak_labels.table_markdown("zh", variants, rows)
    assert f"| {gold_only[0]} | 0.510 ± 0.010 (2 seeds) |  |  |" in text
    assert f"| {mixed[0]} | 0.400 (1 seed) | 0.300 (1 seed) | 0.350 (1 seed) |" in text


def test_lanes_run_every_batch_once_per_pass_two_at_a_time():
    from bench.inference import measure

    both_in = threading.Barrier(2, timeout=10)   # a call returns only when another one is in the model too
    seen, lock = [], threading.Lock()

    def run_batch(batch):
        both_in.wait()
        with lock:
            seen.append(tuple(batch))

    texts = [f"title {i}" for i in range(10)]
    row = measure("fake, batched, 2 lanes x 1 thread", run_batch, texts, batch_size=3, warmup=1, repeats=2,
                  lanes=2)
    batches = [tuple(texts[i:i + 3]) for i in range(0, 10, 3)]
    assert sorted(seen) == sorted(batches[:2] + batches * 2)    # the warm-up's two, then every batch per pass
    assert row["lanes"] == 2 and row["events"] == 10 and row["events_per_second"] > 0


def test_best_shapes_compare_each_mode_in_its_fastest_shape():
    from bench.inference import best_shapes

    rows = [{"name": name, "events_per_second": eps} for name, eps in (
        ("pytorch eager, per event", 50), ("pytorch, batched", 200), ("pytorch, batched, serving's calls", 400),
        ("onnxruntime fp32, batched", 300), ("onnxruntime int8, batched", 390),
        ("pytorch, batched, 2 lanes x 1 thread", 250), ("onnxruntime fp32, batched, 2 lanes x 1 thread", 280),
        ("onnxruntime int8, batched, 2 lanes x 1 thread", 500))]
    best = best_shapes(rows)
    assert best["pytorch"]["row"] == "pytorch, batched, 2 lanes x 1 thread"    # never the serving-calls variant
    assert best["fp32"] == {"row": "onnxruntime fp32, batched", "events_per_second": 300, "ratio_vs_best_pytorch": 1.2}
    assert best["int8"]["ratio_vs_best_pytorch"] == 2.0


def test_an_ensemble_of_one_model_twice_tags_as_that_model_and_mismatched_members_are_refused(tiny_checkpoint):
    import pytest

    torch = pytest.importorskip("torch")
    from model.ensemble import Ensemble
    from model import bert_crf
    from model.data import load_examples
    from model.train import load_checkpoint, predict

    checkpoint = load_checkpoint(tiny_checkpoint)
    examples = load_examples([tiny_checkpoint.parent / "dev.jsonl"])[:40]
    twice = Ensemble([checkpoint.model, checkpoint.model]).eval()
    assert predict(twice, checkpoint.encoder, checkpoint.labels, examples) == \
        predict(checkpoint.model, checkpoint.encoder, checkpoint.labels, examples)
    assert torch.equal(twice.crf.transitions, checkpoint.model.crf.transitions)
    other = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=checkpoint.model.num_tags + 2)
    with pytest.raises(ValueError, match="disagree on the number of tags"):
        Ensemble([checkpoint.model, other])


def test_the_ensemble_bench_serves_both_bundles_and_an_ensemble_of_one_model_twice_scores_as_it(
        tiny_checkpoint, tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("torch")
    from bench import ensemble

    dev = str(tiny_checkpoint.parent / "dev.jsonl")
    monkeypatch.setattr(sys, "argv", ["ensemble.py", "--checkpoint", str(tiny_checkpoint), "--members",
                                      str(tiny_checkpoint), "--held-out", dev, "--test", dev, "--repeats", "1",
                                      "--threads", "1", "--out", str(tmp_path)])
    ensemble.main()
    report = json.loads((tmp_path / "ensemble-en.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["one model, fp32", "one model, int8", "ensemble of 2, fp32", "ensemble of 2, int8"]
    assert rows["ensemble of 2, fp32"]["test_f1"] == rows["one model, fp32"]["test_f1"]
    assert rows["ensemble of 2, fp32"]["f1_change_vs_one_model_fp32"] == 0
    assert rows["one model, fp32"]["throughput_vs_one_model_fp32"] == 1.0
    assert all(r["events"] == 220 and r["events_per_second"] > 0 for r in rows.values())


def test_a_drain_does_not_count_what_was_done_before_its_first_output():
    from types import SimpleNamespace

    from bench.common import events_per_second

    # Two lanes publish their first batches of 4 at t = 1.000 s, then 4 events every 0.5 s.
    stamps = [1000] * 8 + [1500] * 4 + [2000] * 4 + [2500] * 4
    records = [SimpleNamespace(timestamp=t) for t in stamps]
    assert events_per_second(records, done_at_first=8) == 12 / 1.5      # 8 events/s: the steady rate
    assert events_per_second(records) == 19 / 1.5                       # the old count: the first batches too


def test_the_cpu_clock_splits_a_busy_thread_into_running_waiting_and_blocked(monkeypatch):
    import bench.common as common

    # (seconds on a CPU, seconds waiting for one) per thread id: at the start, then two seconds on.
    readings = iter([{7: (5.0, 1.0), 11: (3.0, 0.5), 12: (1.0, 0.0)},
                     {7: (5.2, 1.1), 11: (4.6, 0.7), 12: (1.1, 0.0), 13: (0.1, 0.0)}])
    clock_readings = iter([100.0, 102.0])
    monkeypatch.setattr(common, "_thread_times", lambda pid: next(readings))
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock_readings))
    cores = common.CpuClock(7, None).cores()
    assert cores["worker_event_loop"] == 0.1 and cores["broker"] is None
    assert cores["other_threads"] == 0.1                     # a quiet thread and one that started meanwhile
    assert cores["busy_threads"] == [{"running": 0.8, "waiting_for_cpu": 0.1, "blocked": 0.1}]


def test_the_stream_rounds_give_medians_and_the_lanes_time_split():
    from bench.stream import lane_time, median

    def lanes(running):
        return {"busy_threads": [{"running": running, "waiting_for_cpu": 0.1, "blocked": 0.9 - running}] * 2}

    rows = [{"ratio": 0.9, "cpu_cores": lanes(0.8), "at_once": {"cpu_cores": {"broker": 0.1}}},
            {"ratio": 0.7, "cpu_cores": lanes(0.6)},
            {"ratio": 0.8, "cpu_cores": lanes(0.7), "at_once": {"cpu_cores": {"broker": 0.3}}}]
    assert median(rows, "ratio") == 0.8
    assert median(rows, "at_once", "cpu_cores", "broker") == 0.2          # rounds without it are left out
    assert median(rows, "missing") is None
    assert lane_time(rows, "cpu_cores") == {"running": 0.7, "waiting_for_cpu": 0.1, "blocked": 0.2}
    assert lane_time(rows, "model_only_cpu") is None


def test_the_stream_summary_gives_a_row_per_baseline_drain_old_runs_included():
    """A run with --baselines has a row for each; a run from before it still shows its producer baseline."""
    from bench.stream import BASELINES, baseline_summary
    from bench.summary import _baselines

    rounds = [{"at_once": {"events_per_second": 100.0, "cpu_cores": {"broker": 0.2}}, "ratio_gathered_to_at_once": 1.1,
               "fetch_100ms": {"events_per_second": 90.0, "cpu_cores": {"broker": 0.3}}, "ratio_to_fetch_100ms": 1.2}]
    new = {"baselines": {name: baseline_summary(rounds, name) for name in BASELINES}}
    assert [(b["what"], b["ratio_streaming_to_baseline"], b["broker_cpu_cores"]) for b in _baselines(new)] == [
        ("each output sent at once (linger 0, 16 KiB)", 1.1, 0.2), ("fetches held up to 100 ms", 1.2, 0.3)]
    old = {"producer_baseline": {"events_per_second": 100.0, "broker_cpu_cores": 0.2},
           "ratio_streaming_to_producer_baseline": 1.05}
    assert [(b["what"], b["ratio_streaming_to_baseline"]) for b in _baselines(old)] == [
        ("each output sent at once (linger 0, 16 KiB)", 1.05)]
    assert _baselines({}) == []
