"""`python analysis/report.py RUN_DIR` writes RUN_DIR/report/ with report.md and PNG plots.

Plots: base val top-1 per epoch (one line per trial); best-so-far over trials; each swept parameter
against the metric; the sweep's hyperparameter importances (Optuna's fANOVA, on the run's study
sweep/optuna.journal, or for older runs a study rebuilt from trials.parquet); SPOS
candidates' MACs against inherited val accuracy with a* marked; precision/recall@k for k = 1..K of
the best trial's base and augmented sub-models; per-class recall of the best base model. report.md
names the best trial and compares modes when the run holds several. Works on a run in progress.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402
import matplotlib.ticker  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.load import Run, load_run  # noqa: E402
from analysis.topk import num_classes_of, topk_table  # noqa: E402
from netaug.config import SWEPT_PARAMS  # noqa: E402
from netaug.errors import UserError, exit_on_user_error  # noqa: E402
from netaug.io import atomic_path  # noqa: E402
from netaug.study import STUDY_FILE, first_rung_of, importances, load_study, revalued, rung_values  # noqa: E402

FLOAT_PARAMS = ("r", "aug_loss_weight", "lambda_kd", "share_fraction")


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path.name


def sweep_epochs(run: Run) -> pd.DataFrame:
    if run.epochs.empty or "stage" not in run.epochs:
        return run.epochs
    return run.epochs[run.epochs["stage"] == "sweep"]


def plot_epochs(run: Run, out: Path) -> str | None:
    epochs = sweep_epochs(run)
    if epochs.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for tid, group in epochs.groupby("trial_id", sort=False):
        group = group.sort_values("epoch")
        ax.plot(group["epoch"], group["val_top1"], marker="o", ms=3, label=tid)
    ax.set(xlabel="epoch", ylabel="base val top-1", title="Base val top-1 per epoch, one line per trial")
    ax.grid(alpha=0.3)
    if epochs["trial_id"].nunique() <= 12:
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, out / "val_top1_per_epoch.png")


def _ordered_trials(run: Run) -> pd.DataFrame:
    trials = run.trials.copy()
    if "started_at" in trials and trials["started_at"].notna().any():
        trials = trials.sort_values("started_at", na_position="last")
    return trials.reset_index(drop=True)


def plot_best_so_far(run: Run, metric: str, out: Path) -> str | None:
    if run.trials.empty or metric not in run.trials:
        return None  # a final stage without a sweep (final.arms: [baseline, ...])
    trials = _ordered_trials(run).dropna(subset=[metric])
    if trials.empty:
        return None
    values = trials[metric].to_numpy(dtype=float)
    best = np.minimum.accumulate(values) if metric == "val_loss" else np.maximum.accumulate(values)
    x = np.arange(1, len(values) + 1)
    ordered = "started_at" in trials and trials["started_at"].notna().all()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter(x, values, label=f"trial {metric}", color="tab:blue", zorder=3)
    ax.step(x, best, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial (in start order)" if ordered else "trial (start times not recorded: trial-id order)",
           ylabel=metric, title="Best so far over trials")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out / "best_so_far.png")


def plot_params(run: Run, metric: str, out: Path) -> str | None:
    """One scatter per swept parameter that varies; colour = epochs the trial ran (ASHA stops some early)."""
    params = [p for p in SWEPT_PARAMS if p in run.trials and run.trials[p].nunique(dropna=True) > 1]
    trials = run.trials.dropna(subset=[metric])
    if not params or trials.empty:
        return None
    epochs = trials["epochs_run"].astype(float) if "epochs_run" in trials else pd.Series(1.0, index=trials.index)
    fig, axes = plt.subplots(1, len(params), figsize=(3.3 * len(params) + 1, 3.6), squeeze=False,
                             layout="constrained")
    for ax, param in zip(axes[0], params):
        if param == "mode":
            cats = sorted(trials[param].dropna().unique())
            x = trials[param].map({c: i for i, c in enumerate(cats)})
            ax.set_xticks(range(len(cats)), cats, rotation=20, fontsize=7)
        else:
            x = trials[param].astype(float)
            if param == "s":
                ax.set_xticks(sorted(trials[param].dropna().astype(int).unique()))
            elif param in ("aug_loss_weight", "lambda_kd"):
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        points = ax.scatter(x, trials[metric], c=epochs, cmap="viridis", vmin=epochs.min(), vmax=max(epochs.max(), 1))
        ax.set(xlabel=param, ylabel=metric if param == params[0] else None)
        ax.grid(alpha=0.3)
    fig.colorbar(points, ax=axes[0].tolist(), label="epochs run")
    fig.suptitle(f"Each swept parameter against the last reported {metric}")
    with atomic_path(out / "params_vs_metric.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return "params_vs_metric.png"


def rebuild_study(run: Run, metric: str):
    """An Optuna study holding the run's finished trials, with the sweep's own distributions."""
    import optuna

    sweep = run.space.get("sweep", {})
    dists: dict = {}
    for name in FLOAT_PARAMS:
        rng = sweep.get(name)
        if rng and name in run.trials and run.trials[name].notna().any():
            dists[name] = optuna.distributions.FloatDistribution(rng["low"], rng["high"], log=bool(rng.get("log")))
    s = sweep.get("s")
    if s and "s" in run.trials and run.trials["s"].notna().any():
        if s.get("choices"):
            dists["s"] = optuna.distributions.CategoricalDistribution(list(s["choices"]))
        else:
            dists["s"] = optuna.distributions.IntDistribution(s["low"], s["high"])
    if sweep.get("mode") and len(sweep["mode"]) > 1:
        dists["mode"] = optuna.distributions.CategoricalDistribution(list(sweep["mode"]))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if metric == "val_loss" else "maximize")
    for row in run.trials.dropna(subset=[metric]).to_dict("records"):
        if row.get("status") == "ERROR":
            continue
        params = {k: (int(row[k]) if k == "s" else row[k]) for k in dists if pd.notna(row.get(k))}
        if params:  # a conditional space: a trial holds the parameters its mode sampled
            study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                      value=row[metric]))
    return study


def sweep_study(run: Run, metric: str):
    """(the sweep's Optuna study, where it came from): the run's study file (sweep/optuna.journal), or
    for runs from before it existed a study rebuilt from trials.parquet."""
    study = load_study(run.path / "sweep" / STUDY_FILE)
    if study is not None and metric == run.space.get("sweep", {}).get("metric", "val_top1"):
        return study, f"the run's study sweep/{STUDY_FILE}"
    return rebuild_study(run, metric), "a study rebuilt from trials.parquet"


def first_rung(run: Run, metric: str) -> tuple[dict[str, float], str] | None:
    """(each sweep trial's `metric` at ASHA's first rung, what the rung is): the value ASHA compared it on
    (netaug.study.rung_values), stopped trials too. None: no ASHA, or no epochs."""
    rung = first_rung_of(run.space)
    if rung is None or run.epochs.empty or rung[0] not in run.epochs:
        return None
    epochs = run.epochs[run.epochs["stage"] == "sweep"] if "stage" in run.epochs else run.epochs
    values = rung_values(epochs.to_dict("records"), rung[0], rung[1], metric)
    return (values, rung[2]) if values else None


def _bars(importance: dict[str, float], title: str, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(importance)))
    names = list(importance)[::-1]
    ax.barh(names, [importance[k] for k in names], color="tab:green")
    ax.set(xlabel="importance (fANOVA)", title=title)
    return _save(fig, path)


def plot_importance(run: Run, metric: str, out: Path) -> list[tuple[str | None, str]]:
    """The sweep's hyperparameter importances (Optuna's fANOVA evaluator) as bar charts, each with its note: over
    the trials that ran their whole budget, and over every trial at ASHA's first rung (the study file's trials,
    valued at the rung: only a finished sweep's study names its Tune trials)."""
    study, source = sweep_study(run, metric)
    importance, note = importances(study)
    if importance is None:
        found = [(None, f"{note} (from {source})")]
    else:
        top = next(iter(importance))
        found = [(_bars(importance, f"Optuna hyperparameter importance for {metric}", out / "param_importance.png"),
                  f"{note}, from {source}; most important: {top} ({importance[top]:.2f})")]
    rung = first_rung(run, metric) if study is not None else None
    if rung is None:
        return found
    values, what = rung
    at_rung = revalued(study, values)
    if not at_rung.trials:
        return found + [(None, f"at ASHA's first rung ({what}): not estimated (the study file names no Tune "
                         "trials until the sweep has finished)")]
    importance, note = importances(at_rung, noun="trials")
    if importance is None:
        return found + [(None, f"at ASHA's first rung ({what}): not estimated ({note})")]
    top = next(iter(importance))
    title = f"Optuna hyperparameter importance for {metric}\nat ASHA's first rung ({what})"
    return found + [(_bars(importance, title, out / "param_importance_rung.png"),
                     f"at ASHA's first rung ({what}), where every trial was compared at equal compute: {note}; "
                     f"most important: {top} ({importance[top]:.2f})")]


def plot_spos(run: Run, out: Path) -> str | None:
    archs = run.archs
    if archs.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    stage = archs[~archs["search_id"].str.startswith("sweep-")]
    sweep = archs[archs["search_id"].str.startswith("sweep-")]
    if not sweep.empty:
        ax.scatter(sweep["macs"] / 1e6, sweep["val_top1"], s=14, color="tab:gray", alpha=0.6,
                   label="sweep trials' searches")
    if not stage.empty:
        ax.scatter(stage["macs"] / 1e6, stage["val_top1"], s=22, color="tab:blue", label="search stage")
    chosen = archs[archs["chosen"]]
    ax.scatter(chosen["macs"] / 1e6, chosen["val_top1"], s=120, marker="*", color="tab:red", zorder=4,
               label="a* (chosen by each search)")
    ax.set(xlabel="MACs (M)", ylabel="inherited val top-1 (BN recalibrated)",
           title="SPOS candidates: MACs against inherited accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "spos_macs_vs_accuracy.png")


def plot_topk_curves(run: Run, best: pd.Series, out: Path) -> tuple[str | None, pd.DataFrame]:
    if run.predictions.empty:
        return None, pd.DataFrame()
    preds = run.predictions[run.predictions["trial_id"] == best["trial_id"]]
    if preds.empty or "test" not in set(preds["split"]):
        return None, pd.DataFrame()
    kmax = min(len(t) for t in preds["topk"])
    table = topk_table(preds, list(range(1, kmax + 1)), "test", "macro")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for model, group in table.groupby("model"):
        ax.plot(group["k"], group["precision"], marker="o", label=f"{model} precision@k")
        ax.plot(group["k"], group["recall"], marker="s", linestyle="--", label=f"{model} recall@k")
    ax.set(xlabel="k", ylabel="macro score on test", xticks=range(1, kmax + 1),
           title=f"Precision/recall@k, best trial {best['trial_id']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "precision_recall_at_k.png"), table


def plot_per_class_recall(run: Run, best: pd.Series, out: Path) -> tuple[str | None, np.ndarray | None]:
    if run.predictions.empty:
        return None, None
    preds = run.predictions[(run.predictions["trial_id"] == best["trial_id"]) & (run.predictions["model"] == "base")]
    if preds.empty or "test" not in set(preds["split"]):
        return None, None
    table = topk_table(preds, [1], "test", "none")
    n = num_classes_of(run.predictions)
    recall = table.sort_values("class")["recall"].to_numpy()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * n), 3.8))
    colors = ["tab:red" if v < 0.5 else "tab:blue" for v in recall]
    ax.bar(range(n), recall, color=colors)
    ax.axhline(float(np.mean(recall)), color="black", linestyle=":", label=f"macro recall {np.mean(recall):.3f}")
    ax.set(xlabel="class", ylabel="recall@1 on test", ylim=(0, 1.05), xticks=range(n),
           title=f"Per-class recall of the best base model ({best['trial_id']}); red: below 0.5")
    ax.legend()
    return _save(fig, out / "per_class_recall.png"), recall


ARM_COLORS = {"baseline": "tab:gray", "winner": "tab:red", "netaug_fixed": "tab:blue", "baseline_equal": "tab:orange",
              "reparam": "tab:brown"}


MATCHED_GREYS = ("darkgray", "silver", "dimgray", "lightgray", "black")


def arm_color(arm: str, arms: list[str]) -> str:
    """One colour per arm; baseline_matched's plain arms (baseline_e<N>) in greys of their own, by rank."""
    from netaug.stats import is_matched

    if is_matched(arm):
        matched = [a for a in arms if is_matched(a)]
        return MATCHED_GREYS[matched.index(arm) % len(MATCHED_GREYS)]
    return ARM_COLORS.get(arm, "tab:green")


def _mean_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): a t interval of the mean over seeds (no interval from one seed)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def plot_final(run: Run, out: Path, confidence: float) -> str | None:
    """Per-seed test top-1 per arm with mean and interval (lines join one seed across arms: the pairs);
    train against test top-1 per arm; the base's train top-1 per epoch, mean over seeds, per arm."""
    final = run.final[run.final.get("status", "TERMINATED") == "TERMINATED"].dropna(subset=["test_top1"])
    if final.empty:
        return None
    arms = list(dict.fromkeys(final["arm"]))
    epochs = run.epochs[run.epochs["stage"] == "final"] if "stage" in run.epochs else pd.DataFrame()
    panels = 3 if not epochs.empty else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4))
    ax = axes[0]
    x = {a: i for i, a in enumerate(arms)}
    for _seed, group in final.groupby("seed"):
        group = group.set_index("arm").reindex(arms)
        ax.plot(range(len(arms)), group["test_top1"], color="lightgray", lw=1, zorder=1)
    for arm in arms:
        values = final.loc[final["arm"] == arm, "test_top1"].to_numpy(dtype=float)
        color = arm_color(arm, arms)
        ax.scatter(np.full(len(values), x[arm]), values, color=color, s=28, zorder=3, alpha=0.8)
        mean, low, high = _mean_interval(values, confidence)
        ax.errorbar([x[arm] + 0.12], [mean], yerr=[[mean - low], [high - mean]], fmt="D", color="black", capsize=5,
                    zorder=4)
    ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right")  # up to 8 arms' names side by side
    ax.set_ylim(max(0.0, ax.get_ylim()[0]), min(1.0, ax.get_ylim()[1]))  # a top-1 interval beyond [0, 1] is cut
    ax.set(ylabel="test top-1 of the base", title=f"Test top-1 per seed; mean and {confidence:.0%} t interval")
    ax.grid(alpha=0.3)
    ax = axes[1]
    for arm in arms:
        part = final[final["arm"] == arm].dropna(subset=["train_top1"])
        ax.scatter(part["train_top1"], part["test_top1"], color=arm_color(arm, arms), label=arm, s=36)
    lo = float(min(final["train_top1"].min(), final["test_top1"].min()))
    hi = float(max(final["train_top1"].max(), final["test_top1"].max()))
    pad = 0.02 * max(hi - lo, 0.01)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", lw=0.8, ls=":", label="train = test")
    ax.set(xlabel="train top-1 (fixed un-augmented train subset)", ylabel="test top-1",
           title="Train against test top-1 (underfitting: low on both)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if panels == 3:
        ax = axes[2]
        for arm in arms:
            scored = epochs[epochs["arm"] == arm].dropna(subset=["train_top1"])  # final.eval_every skips epochs
            part = scored.groupby("epoch")["train_top1"].agg(["mean", "min", "max"])
            color = arm_color(arm, arms)
            ax.plot(part.index, part["mean"], color=color, marker="o", ms=3, label=arm)
            ax.fill_between(part.index, part["min"], part["max"], color=color, alpha=0.15)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="train top-1 (mean over seeds; band: min-max)",
               title="Does the tiny model still underfit?")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out / "final_arms.png")


def in_short(answers: list[str]) -> list[str]:
    """One bullet per question of the final stage's `answers` (netaug.stats.answer_lines): its one-sentence
    answer, the question a user asks first (at equal compute, fp32) first, then equal epochs, then int8."""
    found, title = [], None
    for line in answers:
        if line.startswith(("At equal", "Did ")):
            title = line
        elif line.startswith("Answer") and title is not None:
            label = title.split(" (", 1)[0].split("?", 1)[0].strip()
            found.append((("at int8?" in title, not title.startswith("At equal compute")),
                          f"- {label}{', at int8' if 'at int8?' in title else ''}: {line.removeprefix('Answer: ')}"))
    return [bullet for _, bullet in sorted(found, key=lambda item: item[0])]


def final_section(run: Run, out: Path) -> tuple[list[str], tuple[str | None, str] | None]:
    """The report's "Did NetAug help here?" section and its figure."""
    from netaug.stats import answer_lines

    if run.final.empty:
        return [], None
    confidence = run.space.get("final", {}).get("confidence", 0.95)
    ok = run.final[run.final.get("status", "TERMINATED") == "TERMINATED"].dropna(subset=["test_top1"])
    rows = ok.to_dict("records")
    lines = ["## Did NetAug help here?", ""]
    if not run.complete or not (run.path / "final.parquet").is_file():
        lines += ["*The final stage is still running: what has landed so far.*", ""]
    int8 = "int8_test_top1" in ok and ok["int8_test_top1"].notna().any()
    answers = answer_lines(rows, confidence) + [
        line for line in (answer_lines(rows, confidence, "int8_test_top1", int8=True) if int8 else [])
        if not line.startswith("no paired comparison")]
    if short := in_short(answers):
        lines += ["**In short** (each question's answer below, with its figures):", "", *short, ""]
    for line in answers:
        if line.startswith(("At equal", "Did ")):
            lines += ["", f"**{line}**", ""]
        elif line.startswith("Answer"):
            lines += ["", line]
        else:
            lines.append(f"- {line.strip()}")
    lines.append("")
    if not ok.empty:
        cost = {k: (k, "median") for k in ("epochs", "compute", "train_s") if k in ok}
        agg = ok.groupby("arm", sort=False).agg(
            mode=("mode", "first"), seeds=("seed", "count"), **cost, train_top1=("train_top1", "mean"),
            val_top1=("val_top1", "mean"), test_top1=("test_top1", "mean"), test_top1_std=("test_top1", "std"),
            test_f1_at_1=("test_f1_at_1", "mean") if "test_f1_at_1" in ok else ("test_top1", "size")).reset_index()
        lines += ["Mean over seeds per arm (train top-1 is the base on a fixed un-augmented subset of the training "
                  "split, at the last epoch):", "", md_table(agg), ""]
        ranked = [f"test_{m}_at_{k}" for k in (1, 3) for m in ("precision", "recall", "f1")]
        if all(c in ok for c in ranked) and ok[ranked].notna().all(axis=None):
            lines += ["Precision, recall and F1 at k = 1 and 3 on test (macro over classes, of the base; mean over "
                      "seeds):", "", md_table(ok.groupby("arm", sort=False)[ranked].mean().reset_index()), ""]
        lines += ["Per seed:", "", md_table(ok[[c for c in ("arm", "seed", "train_top1", "val_top1", "test_top1",
                                                             "init_digest", "batch_digest") if c in ok]]), ""]
    if run.model:
        m = run.model
        lines += ["### The delivered model", "",
                  f"`final/model.pt` and `final/model.onnx`: arm **{m['arm']}** ({m.get('description')}), seed "
                  f"{m['seed']}, chosen by {m['chosen_by']}. Val top-1 {m['val_top1']:.4f}, test top-1 "
                  f"{m['test_top1']:.4f}.", "",
                  md_table(pd.DataFrame([{
                      "MACs": f"{m['macs'] / 1e6:.2f}M", "params (BN folded)": m["params_bn_folded"],
                      "weights fp32 (KiB)": f"{m['weights_bytes_fp32'] / 1024:.1f}",
                      "weights int8 (KiB)": f"{m['weights_bytes_int8'] / 1024:.1f}",
                      "peak activation fp32 (KiB)": f"{m['peak_activation_bytes_fp32'] / 1024:.1f}",
                      "peak activation int8 (KiB)": f"{m['peak_activation_bytes_int8'] / 1024:.1f}",
                      "ONNX max abs logit diff": f"{m['onnx']['max_abs_logit_diff']:.2e}"}])), ""]
    compute = plot_compute(run, out, confidence)
    if compute is not None:
        lines += [f"![Test top-1 against training compute]({compute})", "",
                  "*Test top-1 against training compute (plain-training epochs). Purple: sweep trials; diamonds: final "
                  "arms, the mean over seeds with the paired interval against the equal-compute reference; dashed: "
                  "the Pareto front (nothing cheaper is as accurate).*", ""]
    name = plot_final(run, out, confidence)
    caption = ("Left: test top-1 of each seed per arm (grey lines join the arms of one seed: the pairs), with the "
               "mean and its t interval. Middle: train against test top-1 per arm and seed. Right: the base's train "
               "top-1 per epoch (mean over seeds): where it plateaus low, the tiny model underfits.")
    return lines, (name, caption)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes: none cheaper (x) and at least as accurate (y), in x order."""
    front, best = [], -np.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot_compute(run: Run, out: Path, confidence: float) -> str | None:
    """Test top-1 against training compute (plain-training epochs by compute.unit): sweep trials as points,
    final arms as their mean over seeds with the paired interval against their reference arm
    (baseline_equal, else baseline), and the Pareto front of all of them."""
    from netaug.stats import paired_difference

    final = run.final[run.final.get("status", "TERMINATED") == "TERMINATED"] if not run.final.empty else run.final
    final = final.dropna(subset=["test_top1", "compute"]) if "compute" in final else final.iloc[0:0]
    trials = run.trials.dropna(subset=["test_top1", "compute"]) if "compute" in run.trials else run.trials.iloc[0:0]
    if final.empty and trials.empty:
        return None
    unit = next((u for u in [*final.get("unit", []), *trials.get("unit", [])] if isinstance(u, str)), "seconds")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    points = []
    if not trials.empty:
        ax.scatter(trials["compute"], trials["test_top1"], color="tab:purple", marker="o", s=30, alpha=0.7,
                   label="sweep trials")
        points += list(zip(trials["compute"].astype(float), trials["test_top1"].astype(float)))
    arms = list(dict.fromkeys(final["arm"]))
    ref = "baseline_equal" if "baseline_equal" in arms else "baseline"
    by_seed = {a: final[final["arm"] == a].set_index("seed")["test_top1"] for a in arms}
    for arm in arms:
        values = by_seed[arm]
        x, y = float(final.loc[final["arm"] == arm, "compute"].mean()), float(values.mean())
        if arm != ref and ref in by_seed:
            seeds = sorted(set(values.index) & set(by_seed[ref].index))
            d = paired_difference(values[seeds].to_numpy(), by_seed[ref][seeds].to_numpy(), confidence)
            low, high = y - (d.mean - d.low), y + (d.high - d.mean)
        else:
            _, low, high = _mean_interval(values.to_numpy(dtype=float), confidence)
        color = arm_color(arm, arms)
        if low == low and high == high:
            ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="D", color=color, capsize=5, ms=7,
                        label=f"{arm} ({values.size} seeds)")
        else:
            ax.scatter([x], [y], marker="D", color=color, s=50, label=f"{arm} ({values.size} seeds)")
        points.append((x, y))
    front = pareto_front(points)
    if front:
        xs, ys = zip(*front)
        ax.step(xs, ys, where="post", color="black", lw=1, ls="--", zorder=0)
        ax.scatter(xs, ys, facecolors="none", edgecolors="black", s=140, lw=1.2, label="Pareto front")
    ax.set_ylim(max(0.0, ax.get_ylim()[0]), min(1.01, ax.get_ylim()[1]))  # an interval beyond a top-1 of 1 is cut
    what = {"seconds": "seconds measured here", "flops": "FLOPs counted", "epochs": "epochs"}.get(unit, unit)
    ax.set(xlabel=f"training compute, in plain-training epochs ({what})", ylabel="test top-1 of the base",
           title=f"Accuracy against compute; bars: {confidence:.0%} paired interval vs {ref}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "compute.png")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def write_report(run: Run) -> Path:
    if run.trials.empty:  # a final stage without a sweep: the sweep's tables and plots are empty, with their columns
        from netaug.records import EPOCHS_SCHEMA, TRIALS_SCHEMA

        run.trials = pd.DataFrame(columns=TRIALS_SCHEMA.names)
        if run.epochs.empty:
            run.epochs = pd.DataFrame(columns=EPOCHS_SCHEMA.names)
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    metric = run.space.get("sweep", {}).get("metric", "val_top1")
    best = run.best_trial()
    lines = [f"# Run report: {run.path.name}", ""]
    status = run.trials["status"].value_counts().to_dict() if "status" in run.trials else {}
    lines.append(f"{'Complete run' if run.complete else 'Run in progress (what has landed so far)'}: "
                 f"{len(run.trials)} trials ({', '.join(f'{v} {k.lower()}' for k, v in status.items())}); "
                 f"metric {metric}.")
    lines.append("")
    section, figure = final_section(run, out)  # the answer first: what a user comes for
    lines += section
    if best is not None:
        params = ", ".join(f"{k} = {_fmt(best[k])}" for k in SWEPT_PARAMS if k in best and _fmt(best[k]))
        lines += ["## Best trial", "", f"**Best trial: {best['trial_id']}** ({params}).", ""]
        macs = {k: f"{best[k] / 1e6:.2f}M" for k in ("base_macs", "aug_macs") if pd.notna(best.get(k))}
        facts = {"val top-1": best.get("val_top1"), "test top-1": best.get("test_top1"),
                 "base MACs": macs.get("base_macs"), "largest augmented (a*) MACs": macs.get("aug_macs")}
        lines.append(" ".join(f"{k}: {_fmt(v)};" for k, v in facts.items() if _fmt(v)))
        if best.get("arch"):
            lines += ["", f"a* = `{best['arch']}`"]
        lines.append("")
    cols = [c for c in ("trial_id", "status", *SWEPT_PARAMS, "epochs_run", "val_top1", "test_top1",
                        "test_precision_at_1", "test_recall_at_1",
                        "test_f1_at_1") if c in run.trials and run.trials[c].notna().any()]
    if cols:
        ranked = run.trials.sort_values(metric, ascending=metric == "val_loss") if metric in run.trials else run.trials
        lines += ["## Trials", "", md_table(ranked[cols]), ""]
    if "mode" in run.trials and run.trials["mode"].nunique() > 1:
        agg = run.trials[run.trials.get("status", "") != "ERROR"].groupby("mode").agg(
            trials=("trial_id", "count"), best_val_top1=("val_top1", "max"), mean_val_top1=("val_top1", "mean"),
            best_test_top1=("test_top1", "max"), mean_test_f1_at_1=("test_f1_at_1", "mean")).reset_index()
        lines += ["## Modes compared", "", md_table(agg), ""]

    figures = []
    figures.append((plot_epochs(run, out), "Base val top-1 per epoch, one line per trial."))
    figures.append((plot_best_so_far(run, metric, out), f"Each trial's {metric} in start order, and the best so far."))
    figures.append((plot_params(run, metric, out), f"Each swept parameter against the last reported {metric}; "
                    "colour is the epochs a trial ran (ASHA stops weak trials early, so compare like with like)."))
    (name, note), *rungs = plot_importance(run, metric, out)
    figures.append((name, f"Optuna hyperparameter importance ({note})."))
    lines += [f"Hyperparameter importance: {note}.", ""]
    for name, note in rungs:
        figures.append((name, f"Optuna hyperparameter importance {note}."))
        lines += [f"Hyperparameter importance {note}.", ""]
    figures.append((plot_spos(run, out), "SPOS candidates: MACs against inherited val top-1 after BN "
                    "recalibration; stars are the a* each search chose."))
    if best is not None and run.predictions.empty:
        lines += ["Precision/recall@k and per-class recall of the best trial: this run folder holds no predictions "
                  "(`predictions.parquet`, or `sweep/predictions/` while a run goes on); the final arms' scores at "
                  "k = 1 and 3 above come from final.parquet.", ""]
    if best is not None:
        name, curves = plot_topk_curves(run, best, out)
        figures.append((name, "Macro precision@k and recall@k on test for k = 1..K, best trial's base and a*."))
        name2, recall = plot_per_class_recall(run, best, out)
        figures.append((name2, "Per-class recall@1 of the best base model on test; a collapsed class shows "
                        "as a bar near zero."))
        if recall is not None:
            weak = [str(c) for c, v in enumerate(recall) if v < 0.5]
            lines += [f"Classes with recall@1 below 0.5 for the best base model: {', '.join(weak) or 'none'}.", ""]
        if not curves.empty:
            lines += ["## Precision/recall/F1@k of the best trial (test, macro)", "",
                      md_table(curves[["model", "k", "precision", "recall", "f1"]]), ""]
    if figure is not None:
        figures.insert(0, figure)
    lines += ["## Plots", ""]
    for name, caption in figures:
        if name is not None:
            lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    path = out / "report.md"
    text = "\n".join(lines) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    for png in out.glob("*.png"):  # a plot of an earlier report that this one no longer draws would mislead
        if f"]({png.name})" not in text:
            png.unlink()
    return path


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python analysis/report.py", description=__doc__.split("\n\n")[1])
    p.add_argument("run_dir", metavar="RUN_DIR")
    args = p.parse_args(argv)
    run = load_run(args.run_dir)
    if run.trials.empty and run.final.empty:
        raise UserError(f"RUN_DIR: no sweep or final trials in {args.run_dir} yet")
    path = write_report(run)
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    print(f"report -> {path} ({len(pngs)} plots: {', '.join(pngs)})")
    best = run.best_trial()
    if best is not None:
        print(f"best trial {best['trial_id']}: val top-1 {_fmt(best.get('val_top1'))}, "
              f"test top-1 {_fmt(best.get('test_top1'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
