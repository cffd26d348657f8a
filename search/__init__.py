"""Ray Tune stages (SPOS supernet, search, Optuna sweep). Filled in by the SPOS and sweep issues."""
