"""What a Ray Tune result says about its trial: its id and its error, as the Parquet files store them.

Below every stage module and search/results.py, so that a stage and the results it writes never
import each other."""

from __future__ import annotations

import re
from pathlib import Path


def trial_id_of(result) -> str:
    """The trial's id as its metrics report it, else as Tune's trial folder names it."""
    if result.metrics and result.metrics.get("trial_id"):
        return result.metrics["trial_id"]
    match = re.match(r"(?:sweep|final)_trial_([0-9a-f]+(?:_\d{5})?)_", Path(result.path).name)
    return match.group(1) if match else Path(result.path).name


def trial_number(result) -> int:
    """The order Tune created the trial in (the number after the id in its folder's name; 0 when absent), which,
    unlike the id, is the same in every run of the same seeded search."""
    match = re.match(r"(?:sweep|final)_trial_[0-9a-f]+(?:_\d{5})?_(\d+)_", Path(result.path).name)
    return int(match.group(1)) if match else 0


def error_text(error: BaseException | None) -> str | None:
    """The last line of the trial's own exception (under Tune's wrappers), at most 500 characters."""
    if error is None:
        return None
    cause = error
    while getattr(cause, "cause", None) is not None:  # Tune wraps the trial's exception
        cause = cause.cause
    lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else type(cause).__name__
