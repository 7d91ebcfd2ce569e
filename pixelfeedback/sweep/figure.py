"""The figure of Table 3.1: per loss, the paired difference to the poly control (mean and
95 % interval over seeds, in mIoU points) against lambda on a log axis; the controls as
horizontal bands; the thesis's six numbers per loss beside them as differences to its own
baseline (0.6225; it had no control). Written by the sweep next to table31.md."""
import numpy as np

from pixelfeedback.plotting import new_figure, save_figure
from pixelfeedback import thesis
from pixelfeedback.sweep.plan import CONTROL, CONTROL_STEP, LOSS_TITLES
from python_layers.template_similarity import ALL_LOSS_NAMES, LOSS_NAMES

POINTS = 100.0  # mIoU -> points


def _seeds(count):
    return f"{count} seed" + ("" if count == 1 else "s")


def _loss_rows(rows, loss):
    cells = sorted((r for r in rows if r["loss"] == loss), key=lambda r: r["lam"])
    return (np.array([r["lam"] for r in cells], float),
            np.array([r["paired_diff"] for r in cells], float) * POINTS,
            np.array([r["paired_ci"] for r in cells], float) * POINTS,
            [r["paired_n"] for r in cells])


SYMLOG_TICKS = (-50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50)


def _point_ticks(ax):
    """Plain numbers (points) as y ticks on the symlog axis, within its range."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.relim()
    ax.autoscale_view()
    low, high = ax.get_ylim()
    ax.yaxis.set_major_locator(FixedLocator([t for t in SYMLOG_TICKS if low <= t <= high]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:+g}" if value else "0"))


def voc_factor(rows):
    """Our lambda times this is its strength on VOC at the thesis's scale (the rows'
    ``lam_voc``), or None when the rows do not say."""
    for row in rows:
        if row.get("lam_voc") and row["lam"]:
            return row["lam_voc"] / row["lam"]
    return None


def _lambda_axes(ax, lams, to_voc):
    """Our lambdas along the bottom (log), their strength on VOC along the top."""
    ax.set_xscale("log")
    ax.set_xticks(lams)
    ax.set_xticklabels([f"{lam:g}" for lam in lams], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("λ (loss weight)", fontsize=8)
    if to_voc:
        top = ax.secondary_xaxis("top", functions=(lambda x: x * to_voc, lambda x: x / to_voc))
        top.set_xticks([lam * to_voc for lam in lams])
        top.set_xticklabels([f"{lam * to_voc:.2g}" for lam in lams], fontsize=6)
        top.minorticks_off()
        top.set_xlabel("λ at VOC's strength (batch 10, crop 321)", fontsize=7)


def _loss_groups(rows):
    """Table 3.1's four losses, then any others (Eq. 3.1 as printed): one row of panels
    each, so that the others' wide intervals do not flatten the four's scale."""
    present = [l for l in ALL_LOSS_NAMES if any(r["loss"] == l for r in rows)]
    groups = ([l for l in present if l in LOSS_NAMES], [l for l in present if l not in LOSS_NAMES])
    return [group for group in groups if group]


def mechanisms_figure(path, rows, title="Table 3.1's mechanisms"):
    """Per measure of ``summary.MEASURES`` the rows hold (the correlated pairs, the flow),
    one panel per group of losses (``_loss_groups``): the paired difference to the poly
    control against lambda, a line per loss with its 95 % interval. Returns the path, or
    None when no row has a measure."""
    from pixelfeedback.sweep.summary import MEASURE_TITLES, MEASURES

    names = [n for n in MEASURES if any("paired_diff" in r["measures"].get(n, {})
                                        for r in rows)]
    groups = _loss_groups(rows)
    if not names or not groups:
        return None
    to_voc = voc_factor(rows)
    figure = new_figure(4.6 * len(names), 3.6 * len(groups) + 0.6)
    panels = figure.subplots(len(groups), len(names), squeeze=False)
    lams = sorted({r["lam"] for r in rows if r["loss"] in ALL_LOSS_NAMES})
    index_of = {loss: index for index, loss in enumerate(l for group in groups for l in group)}
    for group, axes in zip(groups, panels):
        for ax, name in zip(axes, names):
            ax.axhline(0.0, color="0.4", lw=0.8)
            for loss in group:
                cells = sorted((r for r in rows if r["loss"] == loss and name in r["measures"]),
                               key=lambda r: r["lam"])
                x = np.array([r["lam"] for r in cells]) * (1 + 0.04 * index_of[loss])  # apart
                y = np.array([r["measures"][name]["paired_diff"] for r in cells], float)
                err = np.nan_to_num([r["measures"][name]["paired_ci"] for r in cells])
                ax.errorbar(x, y, yerr=err, fmt="o-", capsize=2, lw=1.0, ms=3,
                            color=f"C{index_of[loss]}", label=LOSS_TITLES.get(loss, loss))
            _lambda_axes(ax, lams, to_voc)
            ax.set_ylabel("paired Δ vs the poly control", fontsize=8)
            ax.set_title(MEASURE_TITLES[name], fontsize=9)
            ax.grid(alpha=0.3)
    handles, labels = [], []
    for axes in panels:
        more_handles, more_labels = axes[0].get_legend_handles_labels()
        handles += more_handles
        labels += more_labels
    figure.legend(handles, labels, loc="lower center", fontsize=7, ncol=3, frameon=False)
    figure.suptitle(title + ": below 0, the pair is told apart better / the activation "
                    "spreads beyond the part", fontsize=9)
    figure.tight_layout(rect=(0, 0.6 / (3.6 * len(groups) + 0.6) + 0.04, 1, 1))
    return save_figure(figure, path, dpi=110, layout=False)


def table_figure(path, rows, title="Table 3.1", subtitle=None):
    """Write the figure of ``rows`` (``summary.summarize``), one panel per loss with a row,
    to ``path``; returns the path, or None when no loss has a row."""
    losses = [loss for loss in ALL_LOSS_NAMES if any(r["loss"] == loss for r in rows)]
    if not losses:
        return None
    columns = 2 if len(losses) > 1 else 1
    lines = -(-len(losses) // columns)
    figure = new_figure(5.2 * columns, 3.6 * lines + (0.5 if subtitle else 0.3))
    axes = np.atleast_1d(figure.subplots(lines, columns, squeeze=False).ravel())
    poly = next((r for r in rows if r["loss"] == CONTROL), None)
    step = next((r for r in rows if r["loss"] == CONTROL_STEP), None)
    to_voc = voc_factor(rows)
    # the thesis at matched strength: its lambda on VOC is our lambda times to_voc
    thesis_lams = np.asarray(thesis.LAMBDAS) / (to_voc or 1.0)
    all_lams = sorted({r["lam"] for r in rows if r["loss"] in losses})
    for ax, loss in zip(axes, losses):
        if poly is not None and np.isfinite(poly["ci"]):
            half = poly["ci"] * POINTS
            ax.axhspan(-half, half, color="0.85", label=f"poly control ± 95 % CI ({_seeds(poly['n'])})")
        ax.axhline(0.0, color="0.4", lw=0.8)
        if step is not None and np.isfinite(step["paired_diff"]):
            mid = step["paired_diff"] * POINTS
            half = step["paired_ci"] * POINTS if np.isfinite(step["paired_ci"]) else 0.0
            ax.axhspan(mid - half, mid + half, color="tab:green", alpha=0.25,
                       label=f"step control, paired Δ ± CI ({_seeds(step['paired_n'])})")
        lams, diffs, cis, counts = _loss_rows(rows, loss)
        shown = np.isfinite(diffs)
        ax.errorbar(lams[shown], diffs[shown], yerr=np.nan_to_num(cis[shown]), fmt="o-",
                    color="tab:blue", capsize=3, lw=1.2,
                    label="ours: paired Δ vs poly control ± 95 % CI")
        for lam, diff, n in zip(lams[shown], diffs[shown], np.asarray(counts)[shown]):
            ax.annotate(f"n={n}", (lam, diff), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color="tab:blue")
        if loss in thesis.TABLE:
            ax.plot(thesis_lams, (np.asarray(thesis.TABLE[loss], float) - thesis.BASELINE)
                    * POINTS, "s--", mfc="none", color="tab:red", lw=1.0,
                    label=f"thesis: Δ vs its baseline {thesis.BASELINE:g} (one run, no control)"
                          + (", at matched strength (its λ on VOC)" if to_voc else ""))
        _lambda_axes(ax, all_lams, to_voc)
        ax.set_yscale("symlog", linthresh=1.0)
        _point_ticks(ax)
        ax.set_ylabel("Δ mIoU, points (symlog)")
        ax.set_title(LOSS_TITLES.get(loss, loss), fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[len(losses):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", fontsize=7, ncol=columns, frameon=False)
    figure.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    bottom = 0.06 + 0.035 * -(-len(labels) // columns) / lines
    figure.tight_layout(rect=(0, bottom, 1, 1))
    return save_figure(figure, path, dpi=110, layout=False)
