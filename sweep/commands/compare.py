"""`sweep compare NAME`: the trials of a sweep ranked, the parameters that mattered, and plots.

Everything is read from the sweep's stores (MLflow child runs and their metric histories, the Optuna
study), so it works while the sweep is still running: unfinished trials are listed as `running` with their
latest values. Logs imported for the sweep (`sweep import-logs --sweep NAME`) are listed below the table
and drawn as reference curves, never ranked as trials. The table goes to `--out` as `trials.txt`, the
plots as PNG and one self-contained HTML page; all are logged on the sweep's parent MLflow run under
`compare/`.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import math
import warnings
from pathlib import Path
from typing import Any

from sweep.errors import EXIT_OK, InputError
from sweep.inputs.input_files import check_output_folder
from sweep.inputs.plan import DEFAULT_RESULTS_DIR, SweepPlan, load_plan
from sweep.orchestration.launch_gate import unit
from sweep.report.figures import few_log_ticks, label_points, pairs_in_a_row, visible_lines
from sweep.report.table import fmt
from sweep.report.trial_rows import TrialRow, ranked_table, sweep_rows
from sweep.stores import tracking

HELP = "rank a sweep's trials, show parameter importance and write comparison plots"
ARTIFACT_DIR = "compare"
TABLE_FILE = "trials.txt"
FP8_SCALES = ("fp8.x_s", "fp8.w_s", "fp8.grad_s")
FP8_RANGE = {"x": "x / x_s (e4m3)", "w": "w / w_s (e4m3)", "g": "g / grad_s (e5m2)"}
COLUMNS = ("final_val_loss", "final_val_bpb", "roundtrip_val_bpb", "wallclock_s")
IMPORTANCE_TRIALS = 20   # fANOVA's ranking from fewer finished trials changes with the next few
REFERENCE_COLUMNS = ("final_val_loss", "final_val_bpb", "roundtrip_val_bpb", "wallclock_s")
REFERENCE_STYLES = ("--", ":", "-.", (0, (8, 2, 1, 2, 1, 2)))  # grey lines told apart by their dashes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the sweep's name")
    p.add_argument("--top", type=int, default=5, help="trials whose loss curves are plotted (default 5)")
    p.add_argument("--out", help="folder for the plots (default <results-dir>/<name>/compare)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"where the sweep keeps its state (default {DEFAULT_RESULTS_DIR})")


def table(rows: list[TrialRow], plan: SweepPlan) -> str:
    """The ranked trials with their values and results; hours in the sweep's unit (GPU-hours, or CPU-hours
    for CPU trials) as its summary counts them, and for a trial without a result (running, pruned, failed)
    the val_loss its curve has reached."""
    keys = list(plan.space().params)
    hours = f"{unit(plan.gpus_per_trial).lower()}_hours"

    def cells(r: TrialRow) -> list[str]:
        spent = None if r.wallclock_s is None else r.wallclock_s * plan.devices_per_trial / 3600.0
        return [fmt(r.objective), r.objective_from or "-", *(fmt(r.params.get(k)) for k in keys),
                *(fmt(r.metrics.get(c)) for c in COLUMNS), fmt(spent),
                fmt(r.metrics.get("val_loss") if r.objective is None else None)]

    return ranked_table(rows, plan.space().objective, ["objective", "from", *keys, *COLUMNS, hours, "latest val_loss"],
                        cells)


def importance_evaluator():
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(seed=0)  # the same figures on every call


def importance_caveat(finished: int) -> str:
    """What importances from `finished` trials are worth: a caveat below IMPORTANCE_TRIALS, else nothing."""
    if finished >= IMPORTANCE_TRIALS:
        return ""
    return (f"from {finished} finished trials: unreliable below about {IMPORTANCE_TRIALS}, the order can "
            f"change with a few more")


def importance(study, plan: SweepPlan) -> tuple[dict[str, float], str]:
    """fANOVA importances from the Optuna study and the caveat on them, or no importances and why."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or len(plan.space().params) < 2:
        return {}, (f"parameter importance needs at least 2 finished trials and 2 swept parameters "
                    f"({len(complete)} finished)")
    if len({t.value for t in complete}) == 1:
        return {}, (f"parameter importance: none to tell, all {len(complete)} finished trials have the same "
                    f"{plan.space().metric} ({complete[0].value:.6g})")
    try:
        return (optuna.importance.get_param_importances(study, evaluator=importance_evaluator()),
                importance_caveat(len(complete)))
    except (ValueError, RuntimeError) as e:
        # e.g. every finished trial sampled one value of a parameter: there is no variance to split
        return {}, f"parameter importance unavailable: {e}"


def references(plan: SweepPlan) -> dict[str, Any]:
    """The runs of the logs imported for this sweep, oldest first, by label: the log's file name, with its
    folder when two logs share a name (record folders name their logs alike: train.log, train_seed42.log)."""
    client = tracking.client(plan.mlflow_uri)
    experiment = client.get_experiment_by_name(plan.experiment)
    runs = tracking.search_all(client, [experiment.experiment_id],
                               f"tags.`{tracking.TAG_ROLE}` = '{tracking.IMPORT_ROLE}' and "
                               f"tags.`{tracking.TAG_SWEEP}` = '{plan.name}'",
                               order_by=["attributes.start_time ASC"])
    names = [r.data.tags.get(tracking.TAG_IMPORT_FILE, r.info.run_name) for r in runs]
    labelled = {}
    for run, name in zip(runs, names):
        path = Path(run.data.tags.get(tracking.TAG_IMPORT_PATH, name))
        label = name if names.count(name) == 1 else "/".join(path.parts[-2:])
        labelled[label if label not in labelled else f"{label} (run {run.info.run_id[:8]})"] = run
    return labelled


def loss_curves(plan: SweepPlan, runs: dict[str, str]) -> dict[str, list[tuple[float, float]]]:
    """(training seconds, val_loss) points of each run (label -> run id), matched by training step."""
    client = tracking.client(plan.mlflow_uri)
    curves = {}
    for label, run_id in runs.items():
        times = {m.step: m.value for m in client.get_metric_history(run_id, "train_time_ms")}
        points = [(times[m.step] / 1000.0, m.value) for m in client.get_metric_history(run_id, "val_loss")
                  if m.step in times and math.isfinite(m.value)]
        if points:
            curves[label] = sorted(points)
    return curves


def _optuna_figure(plot, study, path: Path, title: str, **kwargs) -> Path | None:
    """One of Optuna's matplotlib figures, saved with `title`; None when the study cannot make it yet
    (too few finished trials, no variance)."""
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    # Optuna switches matplotlib to its ggplot style for good; the context keeps that to its own figures.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            axes = plot(study, **kwargs)
        except (ValueError, RuntimeError, ZeroDivisionError):
            return None
        if hasattr(axes, "flat"):  # a matrix of panels (contours over pairs): one row of pairs, one title
            fig = pairs_in_a_row(axes, kwargs.get("target_name", "objective"))
            fig.suptitle(title)
        else:
            fig = axes.figure
            fig.set_size_inches(10, 6)
            for loc in ("left", "right"):  # Optuna's own titles, replaced by one that names the sweep
                axes.set_title("", loc=loc)
            axes.set_title(title)
            visible_lines(axes)
        for ax in fig.axes:
            few_log_ticks(ax)
        # Optuna places its colour bar itself; tight_layout would push it over the panels.
        fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _tie_note(done: list[TrialRow]) -> str:
    values = {r.objective for r in done}
    return f" (all {len(done)} finished trials tie at {next(iter(values)):.6g})" if len(values) == 1 else ""


def write_plots(plan: SweepPlan, study, rows: list[TrialRow], top: int, out: Path, summary: str = "",
                refs: dict[str, Any] | None = None) -> list[Path]:
    """PNG files (the loss curves, with the imported `refs` beside the trials, and the FP8 range figure
    from the MLflow rows; Optuna's own matplotlib figures of the study: optimization history, parallel
    coordinates, importances, FP8-scale contours) and one self-contained HTML page holding them all,
    which opens offline."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    space = plan.space()
    done = [r for r in rows if r.objective is not None]
    written = [loss_curve_plot(plan, rows, top, refs or {}, out / "loss_curves.png")]
    if done:
        written += study_plots(plan, study, done, out)
    ranged = [r for r in done if any(f"{tracking.FP8_PREFIX}{k}_flushed" in r.metrics for k in FP8_RANGE)]
    if ranged and any(k in space.params for k in FP8_SCALES):
        written.append(fp8_range_plot(plan.name, space.metric, ranged, out / "fp8_ranges.png"))
    written.append(html_page(plan.name, out / "compare.html", written, summary))
    return written



def loss_curve_plot(plan: SweepPlan, rows: list[TrialRow], top: int, refs: dict[str, Any], path: Path) -> Path:
    """val_loss against training time of the best `top` trials of `rows`, in colour, and of the imported
    `refs`, in grey; the title says how many trials were left out."""
    import matplotlib.pyplot as plt

    curves = loss_curves(plan, {tracking.trial_label(r.number): r.run_id for r in rows[:top]})
    ref_curves = loss_curves(plan, {label: run.info.run_id for label, run in refs.items()})
    # tab10 without its grey, whatever style Optuna's figures left set: grey is the references' colour.
    colours = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (label, points) in enumerate(curves.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", color=colours[i % len(colours)], label=label)
    for i, (label, points) in enumerate(ref_curves.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, color=("0.25", "0.5")[i // len(REFERENCE_STYLES) % 2],
                linestyle=REFERENCE_STYLES[i % len(REFERENCE_STYLES)], linewidth=1.5, label=f"reference: {label}")
    title = f"{plan.name}: val_loss of the best {len(curves)} trials" if curves else f"{plan.name}: no val_loss yet"
    if ref_curves:
        title += f" and {len(ref_curves)} imported logs (grey)"
    if len(rows) > top:
        title += (f"\n({len(rows) - top} of the {len(rows)} trials left out: "
                  f"`sweep compare {plan.name} --top {len(rows)}` draws all)")
    ax.set(xlabel="training time (s)", ylabel="val_loss", title=title)
    if curves or ref_curves:
        ax.legend(fontsize=8)
    return _save(fig, path)


def study_plots(plan: SweepPlan, study, done: list[TrialRow], out: Path) -> list[Path]:
    """Optuna's figures of the study, those it can make from the finished trials in `done`: optimization
    history, parallel coordinates, importances (when the objective varies), FP8-scale contours (when two
    or more scales are swept)."""
    import optuna.visualization.matplotlib as ovm

    space = plan.space()
    keys, metric = list(space.params), space.metric
    tie = _tie_note(done)
    figures = [(ovm.plot_optimization_history, "optimization_history.png", f"{plan.name}: {metric} by trial{tie}",
                {"target_name": metric}),
               (ovm.plot_parallel_coordinate, "parallel_coordinates.png",
                f"{plan.name}: swept values (colour: {metric}){tie}", {"params": keys, "target_name": metric})]
    if len({r.objective for r in done}) > 1 and len(keys) > 1:
        caveat = importance_caveat(len(done))
        figures.append((ovm.plot_param_importances, "importance.png",
                        f"{plan.name}: parameter importance (fANOVA)" + (f"\n{caveat}" if caveat else ""),
                        {"target_name": metric, "evaluator": importance_evaluator()}))
    scales = [k for k in FP8_SCALES if k in keys]
    if len(scales) >= 2:
        figures.append((ovm.plot_contour, "fp8_scale_contours.png",
                        f"{plan.name}: {metric} over pairs of FP8 scales{tie}", {"params": scales, "target_name": metric}))
    written = []
    for plot, name, title, kwargs in figures:
        path = _optuna_figure(plot, study, out / name, title, **kwargs)
        if path is not None:
            written.append(path)
    return written


def _palette_png(path: Path) -> bytes:
    """The figure as a 256-colour PNG. Antialiased lines in a colour map (parallel coordinates, contours)
    make the full-colour file of a 50-trial sweep about 3 times bigger, too big to inline every figure;
    median cut keeps the colour maps' shades, which an octree palette merges."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    data = io.BytesIO()
    palette.save(data, format="PNG", optimize=True)
    return data.getvalue()


def html_page(name: str, path: Path, images: list[Path], table: str = "") -> Path:
    """The figures as one page, each PNG inlined, so the file opens offline and stays small."""
    parts = [f"<h1>{html.escape(name)}</h1>"]
    if table:
        parts.append(f"<pre>{html.escape(table)}</pre>")
    for image in images:
        data = base64.b64encode(_palette_png(image)).decode()
        parts.append(f"<h2>{html.escape(image.stem.replace('_', ' '))}</h2>"
                     f"<img alt='{html.escape(image.name)}' style='max-width:100%' src='data:image/png;base64,{data}'>")
    path.write_text(f"<html><head><meta charset='utf-8'><title>{html.escape(name)}</title></head><body>"
                    + "".join(parts) + "</body></html>")
    return path


def fp8_range_plot(name: str, metric: str, rows: list[TrialRow], path: Path) -> Path:
    """The objective against each cast's flushed and saturated fractions at the trial's last measured
    step: a region of the scale space is bad because a tensor underflows or clips, and this shows which."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharey=True, squeeze=False)
    labels = {}
    for row, (figure, what) in enumerate((("flushed", "non-zero values flushed to 0"),
                                          ("saturated", "values at the format max"))):
        for col, (kind, label) in enumerate(FP8_RANGE.items()):
            ax = axes[row][col]
            key = f"{tracking.FP8_PREFIX}{kind}_{figure}"
            points = [(r.metrics[key], r.objective, str(r.number)) for r in rows if key in r.metrics]
            if points:
                xs, ys, _ = zip(*points)
                ax.scatter(xs, ys, color="tab:blue", edgecolors="black", zorder=2)
            labels[ax] = points
            # Fractions span decades and are often exactly 0: linear below 1e-6, logarithmic above.
            ax.set_xscale("symlog", linthresh=1e-6)
            # From 0, and a factor beyond the largest fraction, so the rightmost point and its label stay inside.
            ax.set_xlim(0, max([x for x, _, _ in points], default=0.0) * 2.5 or 1e-5)
            ax.set(xlabel=f"{label}:\nfraction of {what}", ylabel=metric if col == 0 else None)
            ax.grid(alpha=0.3)
    fig.suptitle(f"{name}: {metric} against the FP8 casts' range use (last measured step; labels: trial numbers)")
    fig.tight_layout()   # the layout first: labels are placed by where their points land on the page
    for ax, points in labels.items():
        label_points(ax, points)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise InputError("--top", f"must be at least 1, got {args.top}")
    plan = load_plan(args.results_dir, args.name)
    out = (Path(args.out) if args.out else plan.sweep_dir / "compare").resolve()
    check_output_folder(out, "--out" if args.out else "--results-dir")
    rows = sweep_rows(plan)
    refs = references(plan)
    from sweep.stores.study import load_study

    study = load_study(plan.storage, plan.name)
    scores, why = importance(study, plan)
    objective = plan.space().objective
    width = max(map(len, refs), default=0)
    reference_lines = [f"reference: {label.ljust(width)}  "
                       + "  ".join(f"{c} {fmt(run.data.metrics.get(c))}" for c in REFERENCE_COLUMNS)
                       + ("  (incomplete log)" if run.data.tags.get(tracking.TAG_IMPORT_COMPLETE) == "false" else "")
                       for label, run in refs.items()]
    summary = "\n".join([
        f"sweep {plan.name}: {len(rows)} trials, objective {objective.metric} ({objective.mode})",
        table(rows, plan),
        *reference_lines,
        "parameter importance: " + (", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + (f" ({why})" if why else "")
                                    if scores else why)])   # why: the caveat on few trials, or why there are none
    print(summary, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / TABLE_FILE).write_text(summary + "\n")
    files = [out / TABLE_FILE, *write_plots(plan, study, rows, args.top, out, summary, refs)]
    client = tracking.client(plan.mlflow_uri)
    for path in files:
        client.log_artifact(plan.parent_run_id, str(path), artifact_path=ARTIFACT_DIR)
    print(f"written (also on the parent MLflow run under {ARTIFACT_DIR}/):", *(f"  {p}" for p in files), sep="\n")
    return EXIT_OK
