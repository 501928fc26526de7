"""Monitoring as an operator gets it: alert rules through promtool, a real Prometheus server
scraping a live worker, and a Grafana dashboard whose queries parse and name exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from model.synth import generate, load_taxonomy_json
from tests.conftest import DEMO_TAXONOMY, ROOT
from bench.harness import WorkerProcess, consume, event, free_port, produce

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "tagstream-dashboard.json"
needs_prometheus = pytest.mark.skipif(not (shutil.which("promtool") and shutil.which("prometheus")),
                                      reason="needs Debian's prometheus package (.ci/run installs it)")
PROMQL_WORDS = {"sum", "rate", "max", "min", "count", "histogram_quantile", "clamp_min", "delta", "increase", "time",
                "and", "or", "unless", "e"}


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", expr)
    # label matchers, range selectors, grouping labels
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)", "", without_strings)
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels)
            if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhd]", w)}


def _dashboard_queries() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def _exported(port: int) -> set[str]:
    """Every metric family the worker declares (labelled ones too, before their first sample),
    with the series names of histograms, plus Prometheus' own ``up``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
    names = set(families) | {"up"}
    for name, kind in families.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "info":
            names.add(f"{name}_info")
    return names


@needs_prometheus
def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    check = subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=PROMETHEUS_DIR, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 5 rules found" in check.stdout, check.stdout + check.stderr
    tests = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS_DIR,
                           capture_output=True, text=True, timeout=60)
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr


class Prometheus:
    """A real Prometheus server on a free loopback port, scraping the given targets every second."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        shutil.copy(PROMETHEUS_DIR / "alerts.yml", workdir / "alerts.yml")
        config.write_text(json.dumps({   # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "tagstream", "static_configs": [{"targets": targets}]}],
        }))
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("prometheus did not become ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:       # 400 with a JSON body for a bad query
            return json.loads(err.read())

    def value(self, expr: str) -> float | None:
        result = self.api("query", query=expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


@needs_prometheus
def test_prometheus_scrapes_a_live_worker_and_the_dashboard_and_rules_name_exported_metrics(
        kafka, topics, tiny_bundle, tmp_path):
    port = free_port()
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), 200, seed=70, lang="mixed", products=True)
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, metrics_port=port, drift_window_events=50,
                           drift_min_texts=10).wait_ready()
    prometheus = None
    try:
        produce(kafka, topics.input, [(p["id"].encode(), event(p["id"], 1, p["title"])) for p in products]
                + [(b"bad", b"{not json")])
        consume(kafka, topics.enriched, count=200, timeout=120)
        prometheus = Prometheus(tmp_path, [f"127.0.0.1:{port}"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and prometheus.value("sum(tagstream_events_consumed_total)") != 201:
            time.sleep(0.5)
        assert prometheus.value('up{job="tagstream"}') == 1
        assert prometheus.value("sum(tagstream_events_consumed_total)") == 201
        assert prometheus.value("sum(tagstream_events_enriched_total)") == 200
        assert prometheus.value('sum(tagstream_events_dead_lettered_total{code="invalid_json"})') == 1
        while time.monotonic() < deadline and prometheus.value("count(tagstream_consumer_lag_events)") != 4:
            time.sleep(0.5)
        assert prometheus.value("count(tagstream_consumer_lag_events)") == 4, "lag per partition, four partitions"
        assert prometheus.value("sum(tagstream_consumer_lag_events)") == 0
        assert prometheus.value("sum(tagstream_drift_windows_total)") == 4
        assert prometheus.value("count(tagstream_model_info)") == 1
        latencies = prometheus.value("sum(tagstream_end_to_end_latency_seconds_count)")
        assert latencies == 201    # one per output record, dead letters included
        rules = [r["name"] for g in prometheus.api("rules")["data"]["groups"] for r in g["rules"]]
        assert sorted(rules) == ["TagstreamConsumerLagGrowing", "TagstreamDeadLetterRateHigh", "TagstreamDriftAlert",
                                 "TagstreamLatencyP99High", "TagstreamWorkerDown"]

        exported = _exported(port)
        queries = _dashboard_queries()
        assert len(queries) >= 12
        for expr in queries:
            answer = prometheus.api("query", query=expr)
            assert answer["status"] == "success", (expr, answer)
            assert _metric_names(expr) <= exported, (expr, _metric_names(expr) - exported)
        rule_exprs = re.findall(r"expr: (?:\|\n)?((?:.+\n)+?)\s+for:", (PROMETHEUS_DIR / "alerts.yml").read_text())
        assert len(rule_exprs) == 5
        for expr in rule_exprs:
            assert _metric_names(expr) <= exported, (expr, _metric_names(expr) - exported)
    finally:
        if prometheus:
            prometheus.stop()
        worker.stop()
    print(f"prometheus read back: 201 consumed, 200 enriched, 1 dead-lettered, 4 lag series, {latencies:.0f} latencies; "
          f"{len(queries)} dashboard queries parse and name exported metrics")


def test_the_metric_name_extraction_sees_through_promql():
    assert _metric_names('histogram_quantile(0.99, sum by (le) (rate(tagstream_x_bucket{a="b c"}[5m]))) > 10') == {
        "tagstream_x_bucket"}
    assert _metric_names('sum(up{job="tagstream"}) and time() - max(tagstream_last)') == {"up", "tagstream_last"}
    assert _metric_names("sum by (code, le) (increase(tagstream_y_total[1h])) / 1e-9") == {"tagstream_y_total"}
