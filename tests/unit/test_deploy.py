"""Deployment files, checked offline: Kubernetes manifests against their schemas, and the compose
file, Dockerfiles and manifests against the settings and files they name."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stream.service.settings import Settings
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
KNOWN_VARIABLES = {env for _, env, _, _ in Settings.describe()}
CRD_SCHEMAS = {"PodMonitor": "podmonitor.schema.json", "ScaledObject": "scaledobject.schema.json"}


def _manifests() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "worker.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_the_kubernetes_manifests_validate_against_their_schemas():
    manifests = _manifests()
    assert set(manifests) == {"ConfigMap", "Deployment", "Service", "PodMonitor", "ScaledObject"}
    version = kubernetes_validate.latest_version()
    for kind, doc in manifests.items():
        if kind in CRD_SCHEMAS:
            schema = json.loads((SCHEMAS / CRD_SCHEMAS[kind]).read_text())
            jsonschema.validate(doc, schema)
        else:
            kubernetes_validate.validate(doc, version, strict=True)   # offline: schemas ship with the package


def test_a_broken_manifest_is_caught():
    deployment = _manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9464"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    scaled = _manifests()["ScaledObject"]
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 500
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, json.loads((SCHEMAS / CRD_SCHEMAS["ScaledObject"]).read_text()))


def test_the_manifests_agree_with_each_other_and_with_the_worker():
    m = _manifests()
    config = m["ConfigMap"]["data"]
    assert set(config) <= KNOWN_VARIABLES, set(config) - KNOWN_VARIABLES
    assert "TAGSTREAM_SASL_PASSWORD" not in config, "the password comes from a Secret"
    pod = m["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["envFrom"][0]["configMapRef"]["name"] == m["ConfigMap"]["metadata"]["name"]
    assert {e["name"] for e in container.get("env", [])} <= KNOWN_VARIABLES
    labels = pod["metadata"]["labels"]
    assert m["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert m["Service"]["spec"]["selector"].items() <= labels.items()
    assert m["PodMonitor"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in container["ports"]}
    assert {e["port"] for e in m["PodMonitor"]["spec"]["podMetricsEndpoints"]} <= port_names
    assert int(config["TAGSTREAM_METRICS_PORT"]) in {p["containerPort"] for p in container["ports"]}
    scaled = m["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == m["Deployment"]["metadata"]["name"]
    assert scaled["maxReplicaCount"] == int(config["TAGSTREAM_PARTITIONS"]), "never more workers than partitions"
    trigger = scaled["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == config["TAGSTREAM_GROUP_ID"]
    assert trigger["topic"] == config["TAGSTREAM_INPUT_TOPIC"]


def test_the_probes_ask_the_workers_health_endpoints_on_its_metrics_port():
    container = _manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    probes = {kind: container[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
    metrics_port = [p["name"] for p in container["ports"] if p["containerPort"] == Settings().metrics_port]
    assert {probe["port"] for probe in probes.values()} == set(metrics_port)


def test_the_compose_file_names_files_that_exist_and_settings_the_worker_knows():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"kafka", "worker", "prometheus", "grafana"}
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists() or source == "../models", (name, source)
    build = services["worker"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    assert set(services["worker"]["environment"]) <= KNOWN_VARIABLES
    assert services["worker"]["environment"]["TAGSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["worker:9464"]
    assert (DEPLOY / "prometheus" / prometheus["rule_files"][0]).is_file()


def test_the_serving_image_has_no_torch_and_the_training_image_has_it():
    serve = (DEPLOY / "docker" / "Dockerfile.serve").read_text()
    train = (DEPLOY / "docker" / "Dockerfile.train").read_text()
    assert "pip install . " in serve and "[train]" not in serve and '! python -c "import torch"' in serve
    assert 'pip install ".[train]"' in train and "import torch" in train
    for dockerfile in (serve, train):
        for line in dockerfile.splitlines():
            if line.startswith("COPY ") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), source
