"""Compact progress for Tune runs: one line per trial result instead of Tune's tables."""

from __future__ import annotations

import sys
import time

from ray.tune import Callback

WAIT_NOTICE_S = 15.0  # pending trials and none running for this long: say that they wait for resources


class LineReporter(Callback):
    """Prints `[stage] trial epoch k/E key value ...` for every reported result, and trial ends; and, when
    trials are pending with none running, a line every WAIT_NOTICE_S seconds saying what they wait for."""

    def __init__(self, stage: str, keys: tuple[str, ...], total_epochs: int | None = None, budget: float | None = None,
                 work: float | None = None, unit: str | None = None) -> None:
        """`total_epochs`: each trial's epochs when all get the same (else a trial's own `epochs_planned`);
        `budget`: a trial's compute in plain epochs (its `compute` key is shown against it); `work`: the
        stage's whole compute in plain epochs, from which the stage's ETA is estimated."""
        self.stage = stage
        self.keys = keys
        self.total = total_epochs
        self.budget = budget
        self.work = work
        self.unit = unit
        self.start = time.perf_counter()
        self.last_epoch: dict[str, int] = {}
        self.spent: dict[str, float] = {}  # compute each trial has reported so far
        self.progress = 0.0  # compute trained in this process: the sum of each report's increment
        self.forgone = 0.0  # compute the scheduler saved by stopping trials early
        self.settled: set[str] = set()  # finished trials whose compute is counted
        self.first: tuple[float, float] | None = None  # (time, compute done) at the first report
        self.waiting_since: float | None = None
        self.last_notice = 0.0

    def __setstate__(self, state: dict) -> None:
        """Tune unpickles its callbacks on a resume: the clocks restart in this process (its perf_counter has
        another origin, so the old start would print negative times and a false rate); counted compute stays."""
        self.__dict__.update(state)
        self.__dict__.setdefault("progress", 0.0)  # a reporter pickled before this field existed
        self.start = time.perf_counter()
        self.first = None
        self.waiting_since = None
        self.last_notice = 0.0

    def on_step_end(self, iteration, trials, **info) -> None:
        for trial in trials:  # after a resume, the trials that finished before count as done work
            if trial.status in ("TERMINATED", "ERROR"):
                self._settle(trial)
        pending = [t for t in trials if t.status == "PENDING"]
        if not pending or any(t.status == "RUNNING" for t in trials):
            self.waiting_since = None
            return
        now = time.perf_counter()
        if self.waiting_since is None:
            self.waiting_since = now
        elif now - self.waiting_since >= WAIT_NOTICE_S and now - self.last_notice >= WAIT_NOTICE_S:
            import ray

            self.last_notice = now
            free = ray.available_resources()
            need = getattr(getattr(pending[0], "placement_group_factory", None), "required_resources", None)
            needs = f"one needs {_fmt(need)}, " if need else ""
            self._print(f"waiting for resources: {len(pending)} trial(s) pending, none running for "
                        f"{now - self.waiting_since:.0f}s; {needs}the cluster has {_fmt(free)} free")

    def _print(self, text: str) -> None:
        print(f"[{self.stage} {time.perf_counter() - self.start:7.1f}s] {text}", file=sys.stdout, flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        epoch = result.get("epoch")
        self.last_epoch[trial.trial_id] = epoch or 0
        planned = result.get("epochs_planned") or self.total
        total = f"/{planned}" if planned else ""
        parts = [f"{k} {result[k]:.4f}" if isinstance(result.get(k), float) else f"{k} {result.get(k)}"
                 for k in self.keys if k in result]
        compute = result.get("compute")
        if isinstance(compute, (int, float)):
            self.progress += max(0.0, float(compute) - self._before(trial))
            self.spent[trial.trial_id] = float(compute)
            budget = result.get("compute_planned") or self.budget
            parts.append(f"compute {compute:.1f}" + (f"/{budget:.1f}" if budget else "") + " plain ep")
        self._print(f"{trial.trial_id} epoch {epoch}{total} " + " ".join(parts) + self._eta())

    @staticmethod
    def _last_compute(trial) -> float:
        result = getattr(trial, "last_result", None) or {}
        compute = result.get("compute")
        return float(compute) if isinstance(compute, (int, float)) else 0.0

    def _before(self, trial) -> float:
        """The compute a trial had reported before this result: a trial restored by a resume reports here first
        at its next epoch, and Tune still holds its last result from before (callbacks run before it updates)."""
        if trial.trial_id in self.spent:
            return self.spent[trial.trial_id]
        return self._last_compute(trial)

    def _eta(self) -> str:
        """The stage's remaining time: the compute left (the stage's whole compute, less what trials spent and
        what the scheduler saved by stopping trials early) at the rate trials have been spending compute."""
        spent = sum(self.spent.values())
        done = spent + self.forgone
        now = time.perf_counter()
        if self.first is None:  # the rate is measured from the first report on: start-up is not training
            self.first = (now, self.progress)
        if not self.work or now - self.first[0] < 5.0 or self.progress <= self.first[1]:
            return ""
        # compute trained here per second: neither what restored trials did before a resume, nor saved compute
        rate = (self.progress - self.first[1]) / (now - self.first[0])
        left = max(0.0, self.work - done)
        eta = _duration(left / rate)
        return f" | stage {done:.0f}/{self.work:.0f} plain ep, ETA {eta}"

    def _settle(self, trial) -> tuple[int, bool]:
        """Counts a finished trial's compute once: what it spent, and what the scheduler saved by stopping it
        early. A trial that finished before a resume reports nothing in this process: its last result says how
        far it got. Returns (its last epoch, whether it stopped early)."""
        result = getattr(trial, "last_result", None) or {}
        last = self.last_epoch.get(trial.trial_id, result.get("epoch") or 0)
        planned = result.get("epochs_planned") or self.total
        early = planned is not None and last < planned
        if trial.trial_id not in self.settled:
            self.settled.add(trial.trial_id)
            compute = result.get("compute")
            if trial.trial_id not in self.spent and isinstance(compute, (int, float)):
                self.spent[trial.trial_id] = float(compute)
            budget = result.get("compute_planned") or self.budget
            if early and budget:
                self.forgone += max(0.0, budget - self.spent.get(trial.trial_id, 0.0))
        return last, early

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last, early = self._settle(trial)
        self._print(f"{trial.trial_id} " + (f"stopped early by the scheduler after epoch {last}" if early else "done"))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._print(f"{trial.trial_id} failed (Tune retries it from its last checkpoint if failures are left)")


def _fmt(resources: dict) -> str:
    keys = [k for k in ("CPU", "GPU") if resources.get(k)] or ["CPU"]
    return ", ".join(f"{float(resources.get(k, 0)):g} {k}" for k in keys)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
