"""`tagstream drift report`: drift reports over time as one PNG, thresholds marked."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Mapping, Sequence

PANELS = (
    ("Divergence from the reference", ("tag_type_psi", "top_value_psi", "tag_type_js", "top_value_js"),
     (("psi", "PSI threshold"), ("js", "JS threshold"))),
    ("Out-of-taxonomy share of spans", ("out_of_taxonomy_rate",), (("out_of_taxonomy_rate", "threshold"),)),
    ("Span confidence", ("confidence.mean", "confidence.p05", "confidence.p50"), ()),
    ("Texts", ("unknown_token_rate", "no_tag_share", "text_length_shift"), ()),
)


def _value(metrics: Mapping, name: str):
    for part in name.split("."):
        metrics = metrics.get(part) if isinstance(metrics, Mapping) else None
    return metrics


def draw(reports: Sequence[Mapping], out: str | Path) -> Path:
    """One panel per group of metrics, windows in time order, alert windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter

    reports = sorted(reports, key=lambda r: r["window"]["end"])
    ends = [datetime.fromisoformat(r["window"]["end"].replace("Z", "+00:00")) for r in reports]
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(11, 2.6 * len(PANELS)), sharex=True)
    for ax, (title, names, thresholds) in zip(axes, PANELS):
        for name in names:
            values = [_value(r["metrics"], name) for r in reports]
            if any(v is not None for v in values):
                ax.plot(ends, [float("nan") if v is None else v for v in values], marker="o", ms=3, label=name)
        for key, label in thresholds:
            level = reports[-1].get("thresholds", {}).get(key) if reports else None
            if level is not None:
                ax.axhline(level, color="red", linestyle="--", linewidth=1, label=f"{label} {level:g}")
        for when, report in zip(ends, reports):
            if report.get("alert"):
                ax.axvline(when, color="red", alpha=0.15, linewidth=6)
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M:%S"))
    axes[-1].set_xlabel("window end (UTC)")
    alerts = sum(1 for r in reports if r.get("alert"))
    fig.suptitle(f"tagstream drift: {len(reports)} windows, {alerts} with an alert (shaded)", fontsize=11)
    fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
