"""The progress line's stage count and ETA, on Tune's own Trial objects (no Ray cluster needed): after a
resume, the trials that finished before count as done work, each once."""

from __future__ import annotations

import pickle
import re

import pytest
from ray.tune import register_trainable
from ray.tune.experiment import Trial

from search import progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _trial(status: str, **result) -> Trial:
    register_trainable("progress_test", lambda config: None)
    trial = Trial("progress_test")
    if result:
        trial.update_last_result(result)
    trial.set_status(status)
    return trial


@pytest.fixture()
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", fake)
    return fake


def test_a_resumed_stage_counts_the_trials_that_finished_before(clock, capsys):
    reporter = progress.LineReporter("final", ("val_top1",), work=100.0)
    done_before = _trial(Trial.TERMINATED, epoch=30, epochs_planned=30, compute=30.0, compute_planned=30.0)
    also_before = _trial(Trial.TERMINATED, epoch=20, epochs_planned=20, compute=20.0, compute_planned=20.0)
    running = _trial(Trial.RUNNING)
    trials = [done_before, also_before, running]
    reporter.on_step_end(0, trials)
    reporter.on_step_end(1, trials)  # a second step counts nothing twice
    reporter.on_trial_result(2, trials, running, {"epoch": 5, "compute": 5.0, "epochs_planned": 50})
    clock.now += 10.0
    reporter.on_trial_result(3, trials, running, {"epoch": 10, "compute": 10.0, "epochs_planned": 50})
    last = capsys.readouterr().out.strip().splitlines()[-1]
    # done: 30 + 20 + 10 = 60 of 100; rate (10 - 5) / 10 s = 0.5 plain epochs/s; left 40 -> 80 s
    assert re.search(r"\| stage 60/100 plain ep, ETA 80s$", last), last
    reporter.on_trial_complete(4, trials, done_before)  # Tune may also announce a restored trial: counted once
    assert sum(reporter.spent.values()) + reporter.forgone == 60.0


def test_a_trial_stopped_early_before_the_resume_counts_its_budget_as_done(clock, capsys):
    reporter = progress.LineReporter("sweep", ("val_top1",), budget=10.0, work=40.0)
    stopped = _trial(Trial.TERMINATED, epoch=2, epochs_planned=10, compute=2.0)
    reporter.on_step_end(0, [stopped])
    assert reporter.spent == {stopped.trial_id: 2.0}
    assert reporter.forgone == 8.0  # the 8 plain epochs the scheduler saved are no longer left to do
    reporter.on_trial_complete(1, [stopped], stopped)
    assert reporter.forgone == 8.0
    assert "stopped early by the scheduler after epoch 2" in capsys.readouterr().out


def test_compute_the_scheduler_saves_shortens_what_is_left_but_is_not_a_rate(clock, capsys):
    """A trial stopped early leaves less to do; the rate stays the compute trials spend per second."""
    reporter = progress.LineReporter("sweep", ("val_top1",), budget=10.0, work=40.0)
    a, b = _trial(Trial.RUNNING), _trial(Trial.RUNNING)
    reporter.on_trial_result(0, [a, b], a, {"epoch": 1, "compute": 1.0, "epochs_planned": 10})
    clock.now += 10.0
    reporter.on_trial_result(1, [a, b], a, {"epoch": 2, "compute": 2.0, "epochs_planned": 10})
    # rate (2 - 1) / 10 s = 0.1 plain epochs/s; left 40 - 2 = 38 -> 380 s
    assert re.search(r"\| stage 2/40 plain ep, ETA 6m20s$", capsys.readouterr().out.strip().splitlines()[-1])
    a.update_last_result({"epoch": 2, "compute": 2.0, "epochs_planned": 10})  # as Tune keeps it
    a.set_status(Trial.TERMINATED)
    reporter.on_trial_complete(2, [a, b], a)  # stopped at 2 of its 10: 8 saved
    clock.now += 10.0
    reporter.on_trial_result(3, [a, b], b, {"epoch": 1, "compute": 1.0, "epochs_planned": 10})
    # spent 3 at (3 - 1) / 20 s = 0.1/s; left 40 - 3 - 8 = 29 -> 290 s
    assert re.search(r"\| stage 11/40 plain ep, ETA 4m50s$", capsys.readouterr().out.strip().splitlines()[-1])


def test_a_reporter_unpickled_on_resume_restarts_its_clocks_and_keeps_its_counts(clock, capsys):
    """Tune pickles its callbacks with the experiment and unpickles them on a resume, in a process whose
    perf_counter starts afresh: the elapsed time and the rate restart there, the compute counted stays."""
    reporter = progress.LineReporter("sweep", ("val_top1",), budget=10.0, work=40.0)
    a = _trial(Trial.RUNNING)
    clock.now = 5000.0
    reporter.on_trial_result(0, [a], a, {"epoch": 1, "compute": 1.0, "epochs_planned": 10})
    clock.now = 5100.0
    reporter.on_trial_result(1, [a], a, {"epoch": 2, "compute": 2.0, "epochs_planned": 10})
    capsys.readouterr()
    clock.now = 30.0  # the resumed process
    resumed = pickle.loads(pickle.dumps(reporter))
    assert resumed.spent == {a.trial_id: 2.0}
    clock.now = 42.0
    resumed.on_trial_result(2, [a], a, {"epoch": 3, "compute": 3.0, "epochs_planned": 10})
    first = capsys.readouterr().out.strip()
    assert first.startswith("[sweep    12.0s] ") and "ETA" not in first  # no rate from one report
    clock.now = 52.0
    resumed.on_trial_result(3, [a], a, {"epoch": 4, "compute": 4.0, "epochs_planned": 10})
    # rate (4 - 3) / 10 s = 0.1 plain epochs/s from the resumed reports only; left 40 - 4 = 36 -> 360 s
    assert re.search(r"^\[sweep    22.0s\] .*\| stage 4/40 plain ep, ETA 6m00s$", capsys.readouterr().out.strip())


def test_trials_restored_mid_training_add_only_their_new_epochs_to_the_rate(clock, capsys):
    """After a resume, a trial that was training reports first at its next epoch, with all its compute so far;
    only that epoch was trained in this process (as cell A's resumed final stage showed: an ETA of 26 min for
    hours of work, before this). Tune still holds its last result from before when callbacks see the new one."""
    reporter = progress.LineReporter("final", ("val_top1",), work=1000.0)  # as unpickled: nothing counted yet
    a = _trial(Trial.RUNNING, epoch=18, epochs_planned=80, compute=18.0)
    b = _trial(Trial.RUNNING, epoch=11, epochs_planned=52, compute=17.0)
    clock.now = 0.0
    reporter.on_trial_result(0, [a, b], a, {"epoch": 19, "compute": 19.0, "epochs_planned": 80})
    clock.now = 10.0
    reporter.on_trial_result(1, [a, b], b, {"epoch": 12, "compute": 19.0, "epochs_planned": 52})
    # done 19 + 19 = 38 of 1000; rate: b's one epoch, 2 plain epochs in 10 s; left 962 -> 4810 s
    assert re.search(r"\| stage 38/1000 plain ep, ETA 80m10s$", capsys.readouterr().out.strip().splitlines()[-1])
    assert reporter.progress == 3.0  # a's epoch 19 and b's epoch 12: 1 + 2


def test_a_reporter_pickled_before_progress_was_counted_resumes(clock):
    """A run started by an earlier version holds a pickled reporter without the `progress` field."""
    reporter = progress.LineReporter("final", ("val_top1",), work=10.0)
    state = dict(reporter.__dict__)
    del state["progress"]
    old = progress.LineReporter.__new__(progress.LineReporter)
    old.__setstate__(state)
    assert old.progress == 0.0
