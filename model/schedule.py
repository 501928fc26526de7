"""The learning-rate schedule of training: linear warm-up and decay within the steps a budget allows;
and the last epochs' weights, for checkpoint averaging."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from model import bert_crf
from model.config import PretrainConfig, TrainConfig
from model.metrics import Scores

ESTIMATE_AFTER = 20       # pretraining steps timed before a time budget sets the schedule's length


class BudgetSchedule:
    """Linear warm-up and decay over the steps training will really take. With a time budget that
    is not ``epochs`` full epochs: the horizon is re-estimated from the pace so far (evaluations
    included), so the rate still decays to zero when the budget runs out instead of staying
    in warm-up."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.config = config
        self.cap = self.total = steps_per_epoch * config.epochs
        self.warmup = int(config.warmup * self.total)
        self._warmup_fixed = not (config.max_seconds or config.max_cpu_seconds)

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))

    def observe(self, step: int, wall: float, cpu: float) -> None:
        """After ``step`` steps taking ``wall`` / ``cpu`` seconds so far, re-aim the horizon."""
        if not step:
            return
        reachable = [budget / (spent / step) for budget, spent in
                ((self.config.max_seconds, wall), (self.config.max_cpu_seconds, cpu)) if budget and spent > 0]
        if not reachable:
            return
        self.total = max(step + 1, min(self.cap, int(min(reachable))))
        if not self._warmup_fixed:
            self.warmup = int(self.config.warmup * self.total)
            self._warmup_fixed = True


@dataclass
class PretrainSchedule:
    """Linear warm-up and decay over ``total`` steps; ``total`` is re-estimated under a time budget."""

    total: int
    warmup: float

    def factor(self, step: int) -> float:
        warm = max(1, round(self.warmup * self.total))
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (self.total - step) / max(1, self.total - warm))


def pretrain_horizon(config: PretrainConfig, steps: int, steps_per_epoch: int, wall: float, cpu: float,
             loop_wall: float, loop_cpu: float) -> int | None:
    """Steps the run will take: the nearest of the step and epoch limits and, once ``steps`` have been
    timed, of the time budgets at the rate so far. None when only time budgets apply and nothing is timed."""
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.epoch_limit is not None:
        limits.append(config.epoch_limit * steps_per_epoch)
    if steps >= ESTIMATE_AFTER:
        if config.max_seconds is not None and loop_wall > 0:
            limits.append(steps + math.floor((config.max_seconds - wall) * steps / loop_wall))
        if config.max_cpu_seconds is not None and loop_cpu > 0:
            limits.append(steps + math.floor((config.max_cpu_seconds - cpu) * steps / loop_cpu))
    return max(steps + 1, min(limits)) if limits else None


def budget_spent(config: PretrainConfig, steps: int, wall: float, cpu: float) -> str | None:
    if config.max_steps is not None and steps >= config.max_steps:
        return "max steps"
    if config.max_seconds is not None and wall >= config.max_seconds:
        return "time budget"
    if config.max_cpu_seconds is not None and cpu >= config.max_cpu_seconds:
        return "CPU budget"
    return None


class LastEpochs:
    """The weights of the last ``n`` epochs, for checkpoint averaging (``n`` < 2: keeps nothing)."""

    def __init__(self, n: int) -> None:
        self.states: collections.deque = collections.deque(maxlen=max(n, 1))

    def add(self, model: bert_crf.BertCrf) -> None:
        if self.states.maxlen > 1:
            self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def keep_average_if_better(self, model, evaluate: Callable[[], Scores], best_f1: float, out: Path,
                               log: Callable[[str], None]) -> Scores | None:
        """Load the average into ``model``; save it and return its dev scores if they beat ``best_f1``."""
        if len(self.states) < 2:
            return None
        first = self.states[0]
        model.load_state_dict({k: (sum(s[k].double() for s in self.states) / len(self.states)).to(first[k].dtype)
                               for k in first})
        scores = evaluate()
        kept = scores.micro.f1 > best_f1
        log(f"average of the last {len(self.states)} epochs: dev micro-F1 {scores.micro.f1:.4f} against the best "
            f"single epoch's {best_f1:.4f}: {'kept' if kept else 'not kept'}")
        if kept:
            bert_crf.save(model, out)
        return scores if kept else None
