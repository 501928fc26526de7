"""Label Studio for review: a small HTTP client, the labelling config, tasks with pre-annotations,
and training records from an export. Plain urllib: the SDK pins versions that clash with ours."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from stream.tagging.taxonomy import Taxonomy

FROM_NAME = "label"       # the <Labels> control: every result we write or read names it
TO_NAME = "text"          # the <Text> object, fed from task data "text"
SOURCE = "label-studio"
# One colour per entity type, in type order, so the same bundle always gets the same config.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd")
PAGE_SIZE = 100


class LabelStudioError(RuntimeError):
    """A failed Label Studio call: one line with the method, path, HTTP status and server message."""


# --- HTTP client -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Client:
    """Label Studio's REST API with a legacy token (``Authorization: Token …``). The token is kept
    out of repr and of every message."""

    url: str
    token: str = field(repr=False)
    timeout: float = 120.0

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        target = self.url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(target, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise LabelStudioError(f"Label Studio: {method} {path}: HTTP {err.code}: "
                                   f"{_server_message(err.read(), err.reason)}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise LabelStudioError(f"Label Studio: {method} {path}: cannot reach {self.url} ({reason})") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise LabelStudioError(f"Label Studio: {method} {path}: the answer is not JSON "
                                   f"({_one_line(raw.decode('utf-8', 'replace'))})") from None


def _one_line(text: str, limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _server_message(raw: bytes, reason: str) -> str:
    """DRF's ``detail`` and ``validation_errors`` (or whatever the body says), on one line."""
    try:
        body = json.loads(raw)
    except ValueError:
        return _one_line(raw.decode("utf-8", "replace")) or str(reason)
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("detail", "message", "error") if body.get(k)]
        if body.get("validation_errors"):
            parts.append(json.dumps(body["validation_errors"], ensure_ascii=False))
        if parts:
            return _one_line("; ".join(parts))
    return _one_line(json.dumps(body, ensure_ascii=False))


# --- labelling config --------------------------------------------------------------------------------

def labelling_config(labels: Iterable[str], taxonomy: Taxonomy | None = None) -> str:
    """An NER config with one Label per entity type; the taxonomy's names for a type become its
    hover hint (not an alias: an alias would replace the type in the annotations)."""
    types = sorted({str(label) for label in labels if label})
    if not types:
        raise ValueError("a labelling config needs at least one entity type")
    lines = ["<View>", '  <Header value="$reasons" size="6"/>',
             f'  <Labels name="{FROM_NAME}" toName="{TO_NAME}" showInline="true">']
    for i, name in enumerate(types):
        attrs = {"value": name, "background": PALETTE[i % len(PALETTE)]}
        meta = taxonomy.types.get(name) if taxonomy is not None else None
        hint = " / ".join(str(meta[k]) for k in ("en", "zh") if meta and meta.get(k))
        if hint:
            attrs["hint"] = hint
        lines.append("    <Label " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items()) + "/>")
    lines += ["  </Labels>", f'  <Text name="{TO_NAME}" value="$text"/>', "</View>"]
    return "\n".join(lines) + "\n"


def config_labels(config: str) -> list[str]:
    """The Label values of the ``label`` control of a project's config."""
    root = ElementTree.fromstring(config)
    return [el.get("value", "") for labels in root.iter("Labels") if labels.get("name") == FROM_NAME
            for el in labels.iter("Label")]


# --- tasks -----------------------------------------------------------------------------------------

def task_key(data: dict) -> tuple[str, str, str]:
    """A task's identity: the same product version and field is one task, however often it is pushed."""
    return str(data.get("product_id")), str(data.get("version")), str(data.get("field"))


def tasks_from_picks(picks: list[dict], model_version: str) -> list[dict]:
    """Label Studio tasks, the model's spans as pre-annotations. Offsets stay Python code points:
    Label Studio's Text tag stores code-point offsets since label-studio-frontend#308 (older
    UTF-16 ones are accepted on the way back, `examples_from_export`)."""
    tasks = []
    for n, pick in enumerate(picks, 1):
        text, pid = pick.get("text"), pick.get("id")
        if not isinstance(text, str) or pid is None:
            raise ValueError(f"pick {n}: needs 'id' and a string 'text'")
        result = []
        for i, span in enumerate(pick.get("predictions") or []):
            start, end, label = span.get("start"), span.get("end"), span.get("label")
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)) or not label:
                raise ValueError(f"pick {n} ({pid}): prediction {i} [{start}, {end}) {label!r} does not fit "
                                 f"its text of {len(text)} characters")
            if span.get("text") is not None and span["text"] != text[start:end]:
                raise ValueError(f"pick {n} ({pid}): prediction {i} says {span['text']!r} but the text there is "
                                 f"{text[start:end]!r}")
            value = {"start": start, "end": end, "text": text[start:end], "labels": [label]}
            item = {"id": f"p{i}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "labels", "value": value}
            if span.get("confidence") is not None:
                item["score"] = float(span["confidence"])
            result.append(item)
        score = float(pick.get("score") or 0.0)
        data = {"text": text, "product_id": str(pid), "version": pick.get("version"), "field": pick.get("field"),
                "score": score, "reasons": "; ".join(str(r) for r in pick.get("reasons") or []),
                "category": pick.get("category")}
        # A prediction's score is the model's confidence in it: the pick score says how unsure the
        # model is, so Label Studio's "prediction-score-min" order shows the most doubtful first.
        prediction = {"model_version": model_version, "score": round(1.0 - min(max(score, 0.0), 1.0), 6),
                      "result": result}
        tasks.append({"data": data, "predictions": [prediction]})
    return tasks


# --- projects, push and pull -------------------------------------------------------------------------

class Pushed(NamedTuple):
    project: int
    imported: int
    skipped: int     # already in the project (same product id, version and field)


def find_project(client: Client, title: str) -> int | None:
    """The id of the project with exactly this title (the oldest, should there be several)."""
    found, page = [], 1
    while True:
        body = client.request("GET", "/api/projects/", query={"title": title, "page": page, "page_size": PAGE_SIZE})
        rows = body.get("results", []) if isinstance(body, dict) else body or []
        found += [row["id"] for row in rows if row.get("title") == title]
        if not isinstance(body, dict) or not body.get("next") or not rows:
            return min(found) if found else None
        page += 1


def project_config(client: Client, project: int) -> str:
    return client.request("GET", f"/api/projects/{project}/")["label_config"]


def push(client: Client, title: str, config: str, tasks: list[dict]) -> Pushed:
    """Create the project (or bring its config up to date), then import the tasks it lacks."""
    project = find_project(client, title)
    if project is None:
        project = client.request("POST", "/api/projects/", {"title": title, "label_config": config})["id"]
        seen: set[tuple[str, str, str]] = set()
    else:
        if project_config(client, project) != config:
            client.request("PATCH", f"/api/projects/{project}/", {"label_config": config})
        seen = {task_key(task.get("data") or {}) for task in pull(client, project)}
    new = []
    for task in tasks:
        key = task_key(task["data"])
        if key not in seen:
            seen.add(key)
            new.append(task)
    if new:
        answer = client.request("POST", f"/api/projects/{project}/import", new)
        if isinstance(answer, dict) and answer.get("task_count", len(new)) != len(new):
            raise LabelStudioError(f"Label Studio: import into project {project} took {answer.get('task_count')} "
                                   f"of {len(new)} tasks")
    return Pushed(project, len(new), len(tasks) - len(new))


def pull(client: Client, project: int) -> list[dict]:
    """Every task of the project with its annotations, in the JSON export's form."""
    body = client.request("GET", f"/api/projects/{project}/export",
                          query={"exportType": "JSON", "download_all_tasks": "true"})
    if not isinstance(body, list):
        raise LabelStudioError(f"Label Studio: GET /api/projects/{project}/export: expected a list of tasks")
    return body


# --- training records from an export -----------------------------------------------------------------

def utf16_to_code_points(text: str) -> dict[int, int]:
    """UTF-16 code-unit offset -> code-point offset, for every offset that is not inside a surrogate pair."""
    out, unit = {}, 0
    for i, char in enumerate(text):
        out[unit] = i
        unit += 2 if ord(char) > 0xFFFF else 1
    out[unit] = len(text)
    return out


def _offsets(text: str, start: int, end: int, said: str | None) -> tuple[int, int] | str:
    """Code-point offsets of an annotated range, or why there are none. Label Studio writes code
    points; a JS tool (or an old Label Studio) UTF-16 units: take that reading only when it alone
    gives the annotated text."""
    if start >= end:
        return f"empty or reversed range [{start}, {end})"
    fits = 0 <= start and end <= len(text)
    if fits and (said is None or text[start:end] == said):
        return start, end
    if said is not None:
        units = utf16_to_code_points(text)
        if start in units and end in units and text[units[start]:units[end]] == said:
            return units[start], units[end]
    if not fits:
        return f"range [{start}, {end}) is outside the text ({len(text)} characters)"
    return f"annotated text {said!r} is not the text at [{start}, {end}) ({text[start:end]!r})"


def _span(text: str, item: dict, labels: set[str] | None) -> dict | str:
    """One result item -> a span ``{start, end, label}``, or why it cannot be one."""
    if item.get("type") != "labels" or item.get("from_name", FROM_NAME) != FROM_NAME:
        return f"unsupported result {item.get('type')!r} from {item.get('from_name')!r}"
    value = item.get("value") or {}
    start, end, names = value.get("start"), value.get("end"), value.get("labels")
    if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool) or isinstance(end, bool):
        return f"offsets {start!r}, {end!r} are not integers"
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str) or not names[0]:
        return f"expected exactly one label, got {names!r}"
    if labels is not None and names[0] not in labels:
        return f"unknown label {names[0]!r} (known: {', '.join(sorted(labels))})"
    said = value.get("text")
    offsets = _offsets(text, start, end, said if isinstance(said, str) else None)
    if isinstance(offsets, str):
        return f"{names[0]} {offsets}"
    return {"start": offsets[0], "end": offsets[1], "label": names[0]}


def latest_annotation(task: dict) -> dict | None:
    """The newest annotation that was submitted, not skipped (Label Studio's ``was_cancelled``)."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    return max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0),
               default=None)


def not_annotated(export: list[dict]) -> list[int]:
    """Ids of the tasks that nobody has annotated yet (or only skipped)."""
    return [task.get("id") for task in export if latest_annotation(task) is None]


def examples_from_export(export: list[dict], labels: Iterable[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Training records from a Label Studio JSON export, the latest submitted annotation per task,
    and the problems ``{task, annotation, reason}`` of the tasks left out for them. ``labels``,
    when given, are the entity types an annotation may use."""
    known = set(labels) if labels is not None else None
    records: list[dict] = []
    problems: list[dict] = []
    for task in export:
        annotation = latest_annotation(task)
        if annotation is None:
            continue
        tid, aid = task.get("id"), annotation.get("id")
        data = task.get("data") or {}
        text = data.get("text")
        if not isinstance(text, str):
            problems.append({"task": tid, "annotation": aid, "reason": "the task has no text"})
            continue
        spans, reasons = [], []
        for item in annotation.get("result") or []:
            span = _span(text, item, known)
            (reasons.append(span) if isinstance(span, str) else spans.append(span))
        spans.sort(key=lambda s: (s["start"], s["end"], s["label"]))
        for before, after in zip(spans, spans[1:]):
            if after["start"] < before["end"]:
                reasons.append(f"{after['label']} [{after['start']}, {after['end']}) overlaps "
                               f"{before['label']} [{before['start']}, {before['end']})")
        if reasons:
            problems += [{"task": tid, "annotation": aid, "reason": reason} for reason in reasons]
            continue
        records.append({"id": str(data.get("product_id", f"task-{tid}")), "text": text, "spans": spans,
                        "source": SOURCE, "task": tid, "annotation": aid,
                        "version": data.get("version"), "field": data.get("field")})
    return records, problems
