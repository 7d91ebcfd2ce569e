"""The Table 3.1 sweep: fine-tune DeepLab-LargeFOV with each template-similarity loss and
weight (lambda), plus the control (the same fine-tune with the softmax loss alone), over
several seeds; evaluate each on val; tabulate beside the thesis's numbers.

Every run is `caffe train` on the command line with a generated solver
(pixelfeedback.training), then the evaluation protocol (pixelfeedback.evaluation). Each
finished run writes one result file atomically (<out>/results/<run>.json); a rerun skips
finished runs, and an interrupted training resumes from its last solver snapshot; once a
run's training finished, only its newest ``keep_snapshots`` snapshots stay (the final
weights always). Everything is checked before the first run trains, so a bad argument fails
in seconds, not after hours of training.

The table shows, per cell, the mean and 95 % confidence interval over seeds and the
difference to the control. The thesis had no control run (its arXiv record's comment:
"Update: Further experiments showed minimal benefits."); one explanation the control tests,
ours: the fine-tune also switches to the poly schedule, which alone took LargeFOV from 62.25
to 65.88 (the author's PyTorch DeepLab readme, "From Caffe"). So a gain counts only against
the control. A loss run and the control run of the same seed start from the same weights and
see the same data order, so the comparison is paired (metrics.paired_difference): a cell
counts as a gain only where its paired 95 % interval lies above zero.

The rooms, each one job (what the thesis printed is ``pixelfeedback.thesis``):

- ``settings``: every setting, defined once (flag, default, check, role).
- ``plan``: the configuration, the runs it plans, their names and result files.
- ``checks``: every check made before the first run trains.
- ``store``: the sweep folder's results and plans.
- ``one_run``: one run trained, evaluated and recorded.
- ``workers``: who trains which run (in order, or one worker per device) and the progress.
- ``driver``: run_sweep, the sequential seed rule, run_and_report.
- ``summary`` (the statistics of each cell), ``table`` (Markdown, CSV) and ``figure``.
"""
