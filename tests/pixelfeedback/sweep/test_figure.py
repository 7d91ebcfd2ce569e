"""The sweep's figures (pixelfeedback/sweep/figure.py): the mechanisms figure draws Table
3.1's four losses in one row of panels and any others (Eq. 3.1 as printed) in a second, so
that the others' wide intervals do not flatten the four's scale."""
import os

from pixelfeedback.sweep import figure


def cell(loss, lam, diff=0.001, ci=0.0005):
    measures = {name: {"paired_diff": diff, "paired_ci": ci}
                for name in ("pair_cat_dog", "pair_chair_sofa", "flow_drop_pct")}
    return {"loss": loss, "lam": lam, "lam_voc": lam * 2890 / 16810, "measures": measures}


def test_the_four_losses_and_the_others_are_two_groups():
    rows = [cell(loss, lam) for loss in ("cosine", "correlation_printed", "selective_cosine")
            for lam in (0.1, 1.0)] + [{"loss": "control", "lam": 0.0, "measures": {}}]
    assert figure._loss_groups(rows) == [["cosine", "selective_cosine"], ["correlation_printed"]]
    assert figure._loss_groups([r for r in rows if "printed" not in r["loss"]]) == [
        ["cosine", "selective_cosine"]]


def test_the_mechanisms_figure_is_drawn_or_none(tmp_path):
    rows = [cell(loss, lam, diff=lam * (50 if "printed" in loss else 0.01))
            for loss in ("cosine", "selective_correlation_printed") for lam in (0.1, 1.0)]
    path = figure.mechanisms_figure(str(tmp_path / "m.png"), rows)
    assert path and os.path.getsize(path) > 0
    bare = [dict(row, measures={}) for row in rows]
    assert figure.mechanisms_figure(str(tmp_path / "none.png"), bare) is None
    assert not (tmp_path / "none.png").exists()
