"""Entity-level scores: a span counts only when its start, end and label all match. Gold spans of a
type the model never saw in training stay in: they are misses, and the scores name those types."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from stream.tagging.spans import Span


@dataclass(frozen=True, slots=True)
class TypeScore:
    precision: float
    recall: float
    f1: float
    support: int      # gold entities
    predicted: int
    correct: int


@dataclass(frozen=True, slots=True)
class Scores:
    per_type: dict[str, TypeScore]
    micro: TypeScore
    macro_f1: float
    unseen: tuple[str, ...] | None = None    # gold types absent from training; None: not checked

    def to_json(self) -> dict:
        out = {"micro": asdict(self.micro), "macro_f1": self.macro_f1,
               "per_type": {k: asdict(v) for k, v in sorted(self.per_type.items())}}
        if self.unseen is not None:
            out["labels_unseen_in_training"] = list(self.unseen)
        return out

    def table(self) -> str:
        rows = [("type", "precision", "recall", "f1", "support")]
        for name, s in sorted(self.per_type.items()):
            rows.append((name, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", str(s.support)))
        m = self.micro
        rows.append(("micro", f"{m.precision:.4f}", f"{m.recall:.4f}", f"{m.f1:.4f}", str(m.support)))
        rows.append(("macro", "", "", f"{self.macro_f1:.4f}", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        if self.unseen:
            lines.append(f"labels unseen in training (never predicted, their spans count as misses): "
                         f"{', '.join(self.unseen)}")
        return "\n".join(lines)


def _score(correct: int, predicted: int, support: int) -> TypeScore:
    precision = correct / predicted if predicted else 0.0
    recall = correct / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TypeScore(precision, recall, f1, support, predicted, correct)


def entity_scores(gold: Sequence[Iterable[Span]], predicted: Sequence[Iterable[Span]],
                  known: Iterable[str] | None = None) -> Scores:
    """``known``: the entity types the model was trained on, so that the scores list the others."""
    if len(gold) != len(predicted):
        raise ValueError(f"expected as many predictions as gold texts ({len(gold)}), got {len(predicted)}")
    n_gold, n_pred, n_correct = Counter(), Counter(), Counter()
    for g, p in zip(gold, predicted):
        g_set = {(s.start, s.end, s.label) for s in g}
        p_set = {(s.start, s.end, s.label) for s in p}
        n_gold.update(label for _, _, label in g_set)
        n_pred.update(label for _, _, label in p_set)
        n_correct.update(label for _, _, label in g_set & p_set)
    per_type = {t: _score(n_correct[t], n_pred[t], n_gold[t]) for t in sorted(set(n_gold) | set(n_pred))}
    micro = _score(sum(n_correct.values()), sum(n_pred.values()), sum(n_gold.values()))
    macro = sum(s.f1 for s in per_type.values()) / len(per_type) if per_type else 0.0
    unseen = None if known is None else tuple(sorted(set(n_gold) - set(known)))
    return Scores(per_type, micro, macro, unseen)
