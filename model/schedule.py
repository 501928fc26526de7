"""The learning-rate schedule of training: linear warm-up and decay within the steps a budget allows."""

from __future__ import annotations

from model.config import TrainConfig


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
