"""The sweep's searcher: Optuna on a space conditional on the training mode, never running one
configuration twice.

Ray Tune's OptunaSearch asks Optuna for each trial. Here the space is define-by-run (`ConditionalSpace`):
`mode` first, then only the parameters that mode reads, so plain training samples nothing else and
TPE does not model parameters a trial ignored. A space with categorical parts has few distinct points
(plain training is one), and a sampler may draw one again; `SweepSearch` then tells Optuna the result
the first trial got (Optuna's advice for repeated parameters) and asks again, so every Tune trial
trains something new. A repeat drawn while its first trial still runs is told that result when it
arrives.
"""

from __future__ import annotations

import json

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from netaug.config import params_of_mode

MAX_REPEATS = 25  # draws in a row that repeat a run configuration before the space counts as exhausted


class ConditionalSpace:
    """The sweep's define-by-run space: `mode` first (when several are swept), then only the parameters
    that mode reads (netaug.config.params_of_mode), in the order of `dists`."""

    def __init__(self, dists: dict, modes: list[str]):
        self.dists, self.modes = dists, list(modes)

    def __call__(self, trial) -> None:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        mode = trial.suggest_categorical("mode", self.modes) if "mode" in self.dists else self.modes[0]
        for name in (n for n in self.dists if n in params_of_mode(mode)):
            d = self.dists[name]
            if isinstance(d, CategoricalDistribution):
                trial.suggest_categorical(name, d.choices)
            elif isinstance(d, FloatDistribution):
                trial.suggest_float(name, d.low, d.high, log=d.log)
            else:
                trial.suggest_int(name, d.low, d.high, log=d.log)


def params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


class SweepSearch(OptunaSearch):
    """OptunaSearch whose Tune trials never repeat a configuration (see the module's docstring)."""

    def __init__(self, *args, exhausted_file: str | None = None, **kwargs):
        """`exhausted_file`: written (JSON) when the space has no configuration left that no trial ran, so the
        driver can tell a sweep that ended early for that reason from one that was interrupted."""
        super().__init__(*args, **kwargs)
        self._key_of: dict[str, str] = {}  # Tune trial id -> its parameters' key
        self._result_of: dict[str, float | None] = {}  # key -> the metric its trial finished with (None: no result)
        self._waiting: dict[str, list] = {}  # key -> repeats drawn while its trial runs (Optuna trials, still open)
        self.repeats = 0
        self.exhausted_file = exhausted_file

    def suggest(self, trial_id: str) -> dict | str | None:
        drawn: list[str] = []
        for _ in range(MAX_REPEATS):
            params = super().suggest(trial_id)
            key = params_key(params)
            if key not in self._key_of.values():
                self._key_of[trial_id] = key
                self._say(drawn, "drawing again")
                return params
            repeat = self._ot_trials.pop(trial_id)
            self.repeats += 1
            drawn.append(self._shown(params))
            if key in self._result_of:
                self._tell(repeat, self._result_of[key])
            else:
                self._waiting.setdefault(key, []).append(repeat)  # told when that trial finishes
        self._say(drawn, f"{MAX_REPEATS} in a row: the space has no configuration left that no trial ran; the sweep "
                         f"ends with {len(self._key_of)} trial(s)")
        if self.exhausted_file:
            from netaug.io import atomic_path

            with atomic_path(self.exhausted_file) as tmp:
                tmp.write_text(json.dumps({"trials": len(self._key_of), "repeats": self.repeats}) + "\n")
        return Searcher.FINISHED

    def _shown(self, params: dict) -> str:
        modes = getattr(self._space, "modes", None)
        return params_key({"mode": modes[0], **params} if modes and "mode" not in params else params)

    @staticmethod
    def _say(drawn: list[str], then: str) -> None:
        if drawn:
            kinds = ", ".join(dict.fromkeys(drawn))
            print(f"[sweep] Optuna drew {len(drawn)} configuration(s) that trials already ran ({kinds}): each is "
                  f"told its trial's result, not trained again; {then}", flush=True)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result=result, error=error)
        key = self._key_of.get(trial_id)
        if key is None or key in self._result_of:
            return
        value = None if error or not result else result.get(self.metric)
        self._result_of[key] = value
        for repeat in self._waiting.pop(key, []):
            self._tell(repeat, value)

    def _tell(self, ot_trial, value: float | None) -> None:
        from optuna.trial import TrialState

        if value is None:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        else:
            self._ot_study.tell(ot_trial, value)
