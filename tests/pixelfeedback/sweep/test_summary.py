"""The Table 3.1 summary (pixelfeedback.summary.summarize, table_markdown, table_csv) for all 24
cells of the thesis's table (4 losses x 6 lambdas) against a hand computation on planted
results: every cell has its own known shift from the control and its own known spread over
seeds, so a summary that swapped lambdas, losses or seeds, or paired a run with another
seed's control, gets numbers that differ from the hand-computed ones."""
import csv
import io
import math

import numpy as np
import pytest
from scipy import stats

from pixelfeedback.sweep import summary
from pixelfeedback import thesis
from pixelfeedback.sweep import table as sweep_table

# The control's planted mean IoU per seed: mean 0.55, deviations -0.05, +0.05, 0, 0, so its
# sample variance is 2 * 0.05**2 / 3. Seed 3 has no loss run: it enters the control's
# statistics and Welch's interval, never a pair.
CONTROL = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.55}
CONTROL_VARIANCE = 2 * 0.05 ** 2 / 3
LOSS_SEEDS = (0, 1, 2)
# A loss run of seed s is CONTROL[s] + delta + k * SPREAD[s]: its paired differences to the
# control are delta + k, delta - k, delta (mean delta, sd k), its own values have the mean
# 0.55 + delta and the sd 0.05 - k (deviations -(0.05 - k), +(0.05 - k), 0).
SPREAD = {0: +1, 1: -1, 2: 0}

# (loss, lambda): (delta, k, verdict). Verdict by hand: the paired 95 % half width is
# t(0.975, 2) * k / sqrt(3) = 2.4841 k; "yes" where delta > 2.4841 k, "worse" where
# delta < -2.4841 k, else "no". Every delta is different, so every cell's mean is its own.
CELLS = {
    ("correlation", 0.01): (+0.012, 0.0020, "yes"),     # 0.012 > 0.00497
    ("correlation", 0.05): (+0.008, 0.0040, "no"),      # 0.008 < 0.00994
    ("correlation", 0.1): (+0.004, 0.0030, "no"),       # 0.004 < 0.00745
    ("correlation", 0.5): (-0.010, 0.0020, "worse"),    # -0.010 < -0.00497
    ("correlation", 1.0): (-0.030, 0.0050, "worse"),    # -0.030 < -0.01242
    ("correlation", 5.0): (-0.200, 0.0100, "worse"),    # -0.200 < -0.02484
    ("cosine", 0.01): (+0.014, 0.0010, "yes"),          # 0.014 > 0.00248
    ("cosine", 0.05): (+0.011, 0.0060, "no"),           # 0.011 < 0.01490
    ("cosine", 0.1): (+0.013, 0.0020, "yes"),           # 0.013 > 0.00497
    ("cosine", 0.5): (+0.002, 0.0030, "no"),            # 0.002 < 0.00745
    ("cosine", 1.0): (-0.006, 0.0010, "worse"),         # -0.006 < -0.00248
    ("cosine", 5.0): (-0.015, 0.0040, "worse"),         # -0.015 < -0.00994
    ("selective_correlation", 0.01): (+0.006, 0.0015, "yes"),    # 0.006 > 0.00373
    ("selective_correlation", 0.05): (-0.150, 0.0070, "worse"),
    ("selective_correlation", 0.1): (-0.160, 0.0080, "worse"),
    ("selective_correlation", 0.5): (-0.170, 0.0090, "worse"),
    ("selective_correlation", 1.0): (-0.180, 0.0110, "worse"),
    ("selective_correlation", 5.0): (-0.190, 0.0120, "worse"),
    ("selective_cosine", 0.01): (+0.016, 0.0035, "yes"),   # 0.016 > 0.00869
    ("selective_cosine", 0.05): (+0.020, 0.0025, "yes"),   # 0.020 > 0.00621
    ("selective_cosine", 0.1): (+0.009, 0.0045, "no"),     # 0.009 < 0.01118
    ("selective_cosine", 0.5): (-0.001, 0.0005, "no"),     # |-0.001| < 0.00124
    ("selective_cosine", 1.0): (-0.012, 0.0055, "no"),     # |-0.012| < 0.01366
    ("selective_cosine", 5.0): (-0.017, 0.0065, "worse"),  # -0.017 < -0.01615
}

# Table 3.1 of the thesis (VOC 2012 val mIoU before CRF), cell by cell.
THESIS = {
    ("correlation", 0.01): 0.6314, ("correlation", 0.05): 0.6285,
    ("correlation", 0.1): 0.6252, ("correlation", 0.5): 0.5977,
    ("correlation", 1.0): 0.5560, ("correlation", 5.0): 0.3253,
    ("cosine", 0.01): 0.6331, ("cosine", 0.05): 0.6306, ("cosine", 0.1): 0.6321,
    ("cosine", 0.5): 0.6198, ("cosine", 1.0): 0.6086, ("cosine", 5.0): 0.5996,
    ("selective_correlation", 0.01): 0.62645, ("selective_correlation", 0.05): 0.32536,
    ("selective_correlation", 0.1): 0.32535, ("selective_correlation", 0.5): 0.32535,
    ("selective_correlation", 1.0): 0.32535, ("selective_correlation", 5.0): 0.32535,
    ("selective_cosine", 0.01): 0.63324, ("selective_cosine", 0.05): 0.63767,
    ("selective_cosine", 0.1): 0.63104, ("selective_cosine", 0.5): 0.61689,
    ("selective_cosine", 1.0): 0.60718, ("selective_cosine", 5.0): 0.59921,
}
THESIS_BASELINE = 0.6225
LOSSES = ("correlation", "cosine", "selective_correlation", "selective_cosine")
LAMBDAS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
TITLES = {"correlation": "correlation", "cosine": "cosine",
          "selective_correlation": "selective correlation",
          "selective_cosine": "selective cosine", "control": "control (softmax only)"}
T975_2, T80_2, T975_3 = 4.302653, 1.060660, 3.182446  # Student t quantiles, 2 and 3 dof


def expected_cell(delta, k, verdict, thesis):
    """The summary of one planted cell, computed by hand from its delta and k."""
    own_var = (0.05 - k) ** 2
    va, vb = own_var / 3, CONTROL_VARIANCE / 4  # Welch: cell (3 seeds) vs control (4)
    welch_dof = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    return dict(
        n=3, mean=0.55 + delta, ci=T975_2 * (0.05 - k) / math.sqrt(3),
        diff=delta, diff_ci=stats.t.ppf(0.975, welch_dof) * math.sqrt(va + vb),
        paired_n=3, paired_diff=delta, paired_ci=T975_2 * k / math.sqrt(3),
        paired_mde=(T975_2 + T80_2) * k / math.sqrt(3), gain=verdict, thesis=thesis)


EXPECTED = {cell: expected_cell(*CELLS[cell], THESIS[cell]) for cell in CELLS}
EXPECTED_CONTROL = dict(n=4, mean=0.55, ci=T975_3 * math.sqrt(CONTROL_VARIANCE) / 2)
NUMBERS = ("mean", "ci", "diff", "diff_ci", "paired_diff", "paired_ci", "paired_mde")


def planted_results():
    """The result records of the planted sweep, in a scrambled order."""
    results = [{"run": f"control_seed{seed}", "loss": "control", "lambda": 0.0, "seed": seed,
                "mean_iou": value} for seed, value in CONTROL.items()]
    for (loss, lam), (delta, k, _) in CELLS.items():
        for seed in LOSS_SEEDS:
            results.append({"run": f"{loss}_lam{lam:g}_seed{seed}", "loss": loss,
                            "lambda": lam, "seed": seed,
                            "mean_iou": CONTROL[seed] + delta + k * SPREAD[seed]})
    order = np.random.RandomState(0).permutation(len(results))
    return [results[i] for i in order]


@pytest.fixture(scope="module")
def rows():
    return summary.summarize(planted_results(), losses=LOSSES, lambdas=LAMBDAS)


def test_the_thesis_grid_is_the_sweeps_default():
    assert tuple(thesis.LOSSES) == LOSSES and tuple(thesis.LAMBDAS) == LAMBDAS
    assert len(CELLS) == 24


def test_every_cell_of_the_summary_matches_the_hand_computation(rows):
    cells = [row for row in rows if row["loss"] in LOSSES]
    assert [(row["loss"], row["lam"]) for row in cells] == \
        [(loss, lam) for loss in LOSSES for lam in LAMBDAS]  # the thesis's order
    for row in cells:
        cell = (row["loss"], row["lam"])
        want = EXPECTED[cell]
        for key in NUMBERS:
            assert row[key] == pytest.approx(want[key], rel=1e-5, abs=1e-12), (cell, key)
        for key in ("n", "paired_n", "gain", "thesis"):
            assert row[key] == want[key], (cell, key)
    control, = [row for row in rows if row["loss"] == "control"]
    for key in ("n", "mean", "ci"):
        assert control[key] == pytest.approx(EXPECTED_CONTROL[key], rel=1e-5), key
    assert control["thesis"] == THESIS_BASELINE  # no stage-1 baseline trained


def markdown_cells(markdown):
    """{(first cell, second cell): {column header: text}} of the Markdown table."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    table = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        table[cells[0], cells[1]] = dict(zip(header, cells))
    return table


def assert_shown(text, value, what):
    """``text`` shows ``value`` to 4 decimals (the last digit may round either way)."""
    assert abs(float(text) - value) <= 0.5e-4 + 1e-9, (what, text, value)


def test_every_cell_of_the_markdown_table_matches_the_hand_computation(rows):
    table = markdown_cells(sweep_table.table_markdown(rows))
    for (loss, lam), want in EXPECTED.items():
        what = (loss, lam)
        shown = table[TITLES[loss], f"{lam:g}"]
        assert shown["seeds"] == "3" and shown["pairs"] == "3", what
        assert_shown(shown["mean IoU"], want["mean"], what)
        assert_shown(shown["± CI"], want["ci"], what)
        assert shown["Δ vs control"].startswith("+" if want["diff"] > 0 else "-"), what
        assert_shown(shown["Δ vs control"], want["diff"], what)
        assert_shown(shown["± Welch CI"], want["diff_ci"], what)
        paired, half = shown["paired Δ ± CI"].split(" ± ")
        assert_shown(paired, want["paired_diff"], what)
        assert_shown(half, want["paired_ci"], what)
        assert_shown(shown["MDE"], want["paired_mde"], what)
        assert shown["gain?"] == want["gain"], what
        assert_shown(shown["thesis"], want["thesis"], what)
    control = table[TITLES["control"], "0"]
    assert control["seeds"] == "4"
    assert_shown(control["mean IoU"], EXPECTED_CONTROL["mean"], "control")
    assert_shown(control["± CI"], EXPECTED_CONTROL["ci"], "control")
    assert_shown(control["thesis"], THESIS_BASELINE, "control")


CSV_COLUMNS = {"mean_iou": "mean", "ci95": "ci", "diff_vs_control": "diff",
               "diff_ci95": "diff_ci", "paired_diff": "paired_diff",
               "paired_ci95": "paired_ci", "paired_mde80": "paired_mde", "thesis": "thesis"}


def test_every_cell_of_the_csv_table_matches_the_hand_computation(rows):
    table = {(record["loss"], float(record["lambda"])): record
             for record in csv.DictReader(io.StringIO(sweep_table.table_csv(rows)))}
    for cell, want in EXPECTED.items():
        shown = table[cell]
        assert int(shown["seeds"]) == 3 and int(shown["paired_seeds"]) == 3, cell
        assert shown["gain"] == want["gain"], cell
        for column, key in CSV_COLUMNS.items():
            assert float(shown[column]) == pytest.approx(want[key], rel=1e-5, abs=1e-12), \
                (cell, column)
    control = table["control", 0.0]
    assert int(control["seeds"]) == 4
    assert float(control["mean_iou"]) == pytest.approx(EXPECTED_CONTROL["mean"])
    assert float(control["ci95"]) == pytest.approx(EXPECTED_CONTROL["ci"], rel=1e-5)


@pytest.mark.parametrize("loss_seeds, control_seeds, pairs", [
    ((0, 1, 2), (1, 2, 3), (1, 2)),         # the loss lacks the last seed, the control the first
    ((2, 3, 4), (0, 1, 2, 3, 4), (2, 3, 4)),  # the loss lacks the lower seeds
    ((0, 1, 2, 3, 4), (0, 1, 2), (0, 1, 2)),  # the control lacks the higher seeds
    ((1, 3), (0, 1, 2, 3), (1, 3)),          # gaps inside
])
def test_pairs_are_made_by_seed_whatever_is_missing_on_either_side(loss_seeds, control_seeds,
                                                                     pairs):
    """Each loss run is paired with the control run of its own seed: a pairing by position
    (or by sorted order) would pair other seeds and get other differences."""
    control = {seed: 0.5 + 0.01 * seed for seed in control_seeds}   # seeds differ a lot
    delta = {seed: 0.001 * (seed + 1) for seed in range(5)}           # and so do their gains
    results = [{"run": f"control_seed{s}", "loss": "control", "lambda": 0.0, "seed": s,
                "mean_iou": v} for s, v in control.items()]
    results += [{"run": f"cosine_lam0.1_seed{s}", "loss": "cosine", "lambda": 0.1, "seed": s,
                 "mean_iou": 0.5 + 0.01 * s + delta[s]} for s in loss_seeds]
    row = summary.summarize(results)[-1]
    differences = [delta[s] for s in pairs]  # by hand: loss - control of the same seed
    sd = np.std(differences, ddof=1)
    assert row["paired_n"] == len(pairs)
    assert row["paired_diff"] == pytest.approx(np.mean(differences), abs=1e-12)
    assert row["paired_ci"] == pytest.approx(
        stats.t.ppf(0.975, len(pairs) - 1) * sd / math.sqrt(len(pairs)), rel=1e-9)
