"""The sweep as an Optuna study on disk: `<run>/sweep/optuna.journal`, Optuna's JournalStorage.

During a sweep, Ray Tune's OptunaSearch asks and tells through this file, so `optuna-dashboard
<run>/sweep/optuna.journal` shows the study live. A sweep killed and resumed may leave trials in the
journal that Tune never recorded (asked after Tune's last experiment checkpoint); once the sweep has
finished, `write_study` rewrites the file from Tune's own records, one Optuna trial per Tune trial,
to a temporary name and then renames it. Trials the scheduler stopped early become PRUNED, with
their per-epoch values, so importances compare trials that ran the same schedule. Importances use
Optuna's own evaluator (fANOVA), on the parameters that the most trials share (the space is conditional on
mode).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netaug.config import read_params
from netaug.io import atomic_path

STUDY_FILE = "optuna.journal"
STUDY_NAME = "sweep"
MIN_IMPORTANCE_TRIALS = 4  # fANOVA on fewer finished trials says nothing


def journal_storage(path: str | Path):
    """Optuna's JournalStorage on the file at `path` (created if absent)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load_study(path: str | Path):
    """The sweep's study in the journal at `path`, or None when there is no such file."""
    import optuna

    if not Path(path).is_file():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(path))


@dataclass(frozen=True)
class TrialRecord:
    """One Tune trial as the study keeps it. state: "COMPLETE" (ran the whole schedule; `value` is
    its last metric), "PRUNED" (stopped early by the scheduler: Optuna's name for it) or "FAIL"."""

    tune_trial_id: str
    params: dict[str, Any]
    value: float | None
    intermediate: dict[int, float]  # epoch -> metric
    state: str


def write_study(path: str | Path, trials: Sequence[TrialRecord], distributions: dict, direction: str) -> int:
    """Rewrite the journal at `path` holding exactly `trials` (in order); returns how many it holds."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frozen = []
    for t in trials:
        params = {k: v for k, v in t.params.items() if k in distributions}
        complete = t.state == "COMPLETE" and t.value is not None
        state = TrialState.COMPLETE if complete else TrialState.PRUNED if t.state == "PRUNED" else TrialState.FAIL
        frozen.append(optuna.trial.create_trial(
            state=state, value=t.value if complete else None,
            params=params, distributions={k: distributions[k] for k in params},
            intermediate_values={int(k): float(v) for k, v in t.intermediate.items()},
            user_attrs={"tune_trial_id": t.tune_trial_id}))
    with atomic_path(path) as tmp:
        study = optuna.create_study(storage=journal_storage(tmp), study_name=STUDY_NAME, direction=direction)
        study.add_trials(frozen)
    return len(frozen)


def shared_params(done: Sequence, min_trials: int) -> tuple[list[str], int] | None:
    """The parameter set that the most finished trials (at least `min_trials`) all sample, and how many do; of
    sets shared by as many trials, the largest. A set of one parameter comes last: fANOVA cannot rank it against
    anything. (A sweep's space is conditional on mode: plain training samples none of NetAug's parameters, and
    only NetAug+RKD samples lambda_kd; fANOVA on more trials is the firmer answer.)"""
    own = {frozenset(t.params) for t in done}
    candidates, frontier = set(own), set(own)
    while frontier:  # every set that some trials' parameters have in common, not only each trial's own
        frontier = {a & b for a in frontier for b in own} - candidates
        candidates |= frontier
    counts = {names: sum(names <= set(t.params) for t in done) for names in candidates}
    ranked = sorted(((len(names), n, sorted(names)) for names, n in counts.items() if n >= min_trials and names),
                    key=lambda x: (x[0] < 2, -x[1], -x[0], x[2]))
    return (ranked[0][2], ranked[0][1]) if ranked else None


def _as_read(trial):
    """A finished trial with only the parameters its mode reads (netaug.config.read_params): a study that a flat
    searcher wrote holds a lambda_kd for every NetAug trial and an r for every plain one."""
    import optuna

    params = {k: v for k, v in read_params(trial.params, trial.params.get("mode")).items() if v is not None}
    return optuna.trial.create_trial(state=trial.state, value=trial.value, params=params,
                                     distributions={k: trial.distributions[k] for k in params},
                                     user_attrs=trial.user_attrs)


def importances(study, min_trials: int = MIN_IMPORTANCE_TRIALS, noun: str = "finished trials"
                ) -> tuple[dict[str, float] | None, str]:
    """(parameter -> importance, most important first, or None; a note saying on what, or why not).
    fANOVA runs on the parameter set that the most finished trials share (shared_params), on those trials."""
    import optuna
    from optuna.trial import TrialState

    done = [_as_read(t) for t in study.trials if t.state == TrialState.COMPLETE] if study is not None else []
    if len(done) < min_trials:
        return None, f"needs at least {min_trials} {noun}; {len(done)} " + (
            "finished" if noun == "finished trials" else "here")
    shared = shared_params(done, min_trials)
    if shared is None:
        return None, f"no parameter is sampled by {min_trials} or more of the {len(done)} {noun}"
    names, n = shared
    if len(names) == 1:
        return None, (f"of the {len(done)} {noun}, {min_trials} or more share only {names[0]}: "
                      "fANOVA has nothing to rank it against")
    try:
        read = optuna.create_study(direction=study.direction)  # the finished trials, each with what it read
        read.add_trials(done)
        found = optuna.importance.get_param_importances(
            read, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=names)
    except (RuntimeError, ValueError) as exc:
        return None, f"could not be computed: {exc}"
    if not found:
        return None, "no parameter varied"
    if n == len(done) and set(names) == {k for t in done for k in t.params}:
        return dict(found), f"fANOVA on {n} {noun}"
    if n == len(done):
        return dict(found), f"fANOVA on {n} {noun}, over the parameters all of them sample: {', '.join(names)}"
    return dict(found), f"fANOVA on the {n} of {len(done)} {noun} that sample {', '.join(names)}"


def revalued(study, values: dict[str, float]):
    """An in-memory study of `study`'s trials that have a value in `values` (by Tune trial id, the user attribute
    write_study gives each), each COMPLETE with that value: e.g. every trial, stopped ones too, at ASHA's first
    rung, where the scheduler compared them all at equal compute."""
    import optuna
    from optuna.trial import TrialState

    out = optuna.create_study(direction=study.direction)
    out.add_trials([optuna.trial.create_trial(state=TrialState.COMPLETE, value=float(values[tid]), params=t.params,
                                              distributions=t.distributions, user_attrs=t.user_attrs)
                    for t in study.trials if (tid := t.user_attrs.get("tune_trial_id")) in values])
    return out


def first_rung_of(space: dict) -> tuple[str, float, str] | None:
    """(the reported key ASHA's rungs are on, its first rung, in words) for a run's space (space.json's dict):
    cumulative compute in plain epochs, or the epoch under `compute.unit: epochs`. None: no ASHA."""
    sweep = space.get("sweep", {})
    if sweep.get("scheduler", "asha") != "asha":
        return None
    epochs = space.get("compute", {}).get("unit", "epochs") == "epochs"
    limit = sweep.get("epochs") if epochs else sweep.get("budget")
    rung = min(float(sweep.get("grace_period", 1)), float(limit) if limit else float("inf"))
    if epochs:
        return "epoch", rung, f"epoch {rung:g}"
    return "compute", rung, f"{rung:g} plain epoch{'' if rung == 1 else 's'} of compute"


def rung_values(epochs: Iterable[dict], key: str, rung: float, metric: str) -> dict[str, float]:
    """Each trial's `metric` at its first epoch whose `key` reached `rung`: the value ASHA compared it on there.
    A trial that never got that far has none."""
    values: dict[str, tuple[int, float]] = {}
    for row in epochs:
        k, v = row.get(key), row.get(metric)
        if k is None or v is None or k != k or v != v or k < rung - 1e-9:
            continue
        tid, epoch = str(row["trial_id"]), int(row["epoch"])
        if tid not in values or epoch < values[tid][0]:
            values[tid] = (epoch, float(v))
    return {tid: v for tid, (_, v) in values.items()}


def rung_line(study, metric: str, values: dict[str, float], what: str) -> str:
    """One line naming the most important hyperparameter at ASHA's first rung, over every trial that reached it."""
    found, note = importances(revalued(study, values), noun="trials")
    head = f"at ASHA's first rung ({what}), most important for {metric}"
    if found is None:
        return f"{head}: not estimated ({note})"
    return f"{head}: {next(iter(found))} ({note}: " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()) + ")"


def most_important_line(study, metric: str) -> str:
    """One line naming the most important hyperparameter of the sweep (or why none is named)."""
    found, note = importances(study)
    if found is None:
        return f"most important hyperparameter for {metric}: not estimated ({note})"
    ranked = ", ".join(f"{k} {v:.2f}" for k, v in found.items())
    return f"most important hyperparameter for {metric}: {next(iter(found))} ({note}: {ranked})"
