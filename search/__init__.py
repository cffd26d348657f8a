"""The Ray stages of `search/run.py`: SPOS supernet, search, Optuna sweep on Ray Tune, final retraining."""
