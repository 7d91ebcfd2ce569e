"""The GPU check's report: the verdict and one JSON and one Markdown file
(``pixelfeedback.gpu_check`` writes them; the timings are ``pixelfeedback.gpu_timings``')."""
import json
import math
import os

from pixelfeedback import files, reports

PASS, FAIL, SKIP = "pass", "fail", "skipped"
NO_GPU = "no GPU: --cpu"

STEP_TITLES = (("libraries", "Shared libraries resolve"), ("device_query", "caffe device_query"),
               ("cpu_gpu_passes", "CPU vs GPU forward and backward"),
               ("caffe_tests", "Caffe's own GPU layer tests"),
               ("timings", "Timings"), ("extrapolation", "Table 3.1 sweep, extrapolated"))
NET_TITLES = {"softmax": "control (softmax only)", "stage1": "stage 1 (DeepLab's baseline)"}
KIND_TITLES = (("stage 1", "stage 1 (the baseline)"), ("control", "controls (poly)"),
               ("step control", "step controls"), ("loss run", "loss x lambda x seed runs"))


def overall_status(steps):
    """fail if any step failed, else pass (skipped steps are listed, not failures)."""
    return FAIL if any(step.get("status") == FAIL for step in steps.values()) else PASS


def hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def percent(share):
    return "n/a" if share is None else f"{100 * share:.1f} %"


def _header(report):
    bundle = report.get("bundle") or {}
    toolkit = (f"{bundle.get('recipe_hash', 'n/a')} (CUDA {bundle.get('cuda', 'n/a')}, built "
               f"for sm_{bundle.get('cuda_arch', 'n/a')})" if bundle else
               "none: the installed toolkit (the image, or this checkout)")
    return [f"# GPU check: {report['status'].upper()}", "",
            f"- machine: {report.get('machine', 'n/a')}",
            f"- GPU: {report.get('gpu_label', 'n/a')}", f"- bundle: {toolkit}",
            f"- wall time of the check: {report.get('seconds', 0):.0f} s", "",
            "| step | status | seconds |", "|---|---|---|"]


def _passes(passes):
    lines = ["", "## CPU vs GPU passes", "",
             f"LargeFOV train nets at width_div {passes['width_div']} (1: full width), "
             f"batch {passes['batch']}, lambda {passes['lambda']}, Dropout left out; allowed "
             f"max |GPU - CPU| / max |CPU|: blobs and losses "
             f"{passes['tolerances']['forward']:g}, parameter gradients "
             f"{passes['tolerances']['gradient']:g}, data and label identical.", "",
             "| net | status | worst comparison | CPU s | GPU s |", "|---|---|---|---|---|"]
    for loss, entry in passes["nets"].items():
        worst = max(entry.get("comparisons") or [], default=None,
                    key=lambda row: (row["status"] == FAIL, row["difference"]))
        worst_text = (f"{worst['what']}: {worst['difference']:.2e}"
                      if worst else entry.get("reason", ""))
        lines.append(f"| {loss} | {entry['status']} | {worst_text} | "
                     f"{reports.fmt(entry.get('cpu_seconds'), 1)} | "
                     f"{reports.fmt(entry.get('gpu_seconds'), 2)} |")
    return lines


def _tests(tests):
    if tests.get("reason") == NO_GPU:
        text = f"{tests['tests_selected']} tests listed (not run: {tests['reason']})"
    elif tests.get("status") == SKIP:
        text = f"not run: {tests.get('reason')}"
    else:
        text = (f"{tests.get('passed', 0)} passed, failed: "
                f"{', '.join(tests.get('failed') or []) or 'none'}")
    return ["", "## Caffe's own tests", "", f"Filter `{tests['filter']}`: {text}"]


def _timings(timings):
    lines = ["", f"## Timings ({timings['device']}, crop {timings['crop']}, width_div "
             f"{timings['width_div']}, {timings['iterations_timed']} iterations each)", "",
             "Seconds per `caffe train` iteration (fine-tunes at batch "
             f"{timings['batch']}, stage 1 at batch {timings.get('stage1_batch', 'n/a')}), and "
             "the Python layers' share of an iteration by Caffe's own per-layer timing "
             "(`caffe time`: each layer's forward and backward timed alone; the data layer's "
             "forward is its wait for the batch):", "",
             "| net | s / iteration | Python layers (ms: data, label_shrink, loss_template) "
             "| their share |", "|---|---|---|---|"]
    shares = timings.get("python_layers") or {}
    for net, seconds in timings["train_seconds_per_iteration"].items():
        share = shares.get(net) or {}
        layers = ", ".join(f"{name} {ms:.1f}" for name, ms in
                           (share.get("python_layers_ms") or {}).items()) or "n/a"
        lines.append(f"| {NET_TITLES.get(net, net)} | {seconds:.3f} | {layers} | "
                     f"{percent(share.get('python_share'))} |")
    evaluate = timings.get("evaluate_seconds_per_image_513")
    lines += ["", "| what | seconds |", "|---|---|",
              f"| test-net forward at 513 | {timings['test_forward_seconds_513']:.3f} |",
              "| evaluation per val image at 513 (read, forward, score, write) | "
              + (f"{evaluate:.3f} |" if evaluate is not None else
                 "n/a (no SciPy/OpenCV here: the test-net forward stands in) |")]
    if timings.get("list_check_seconds_per_line") is not None:
        lines += [f"| list check per line (image and label read) | "
                  f"{timings['list_check_seconds_per_line']:.4f} |",
                  f"| initial weights' check | {timings['init_check_seconds']:.2f} |"]
    return lines


def _sweep(sweep):
    kinds = sweep.get("by_kind") or {}
    lines = ["", "## The default Table 3.1 sweep on this device, extrapolated", "",
             f"`tools/reproduce_table.py` without arguments: {sweep['runs']} runs (seeds "
             f"{', '.join(map(str, sweep.get('seeds', [])))}): stage 1 for "
             f"{sweep.get('baseline_iterations', 'n/a')} iterations, then each fine-tune for "
             f"{sweep['iterations_per_run']}; every run evaluated on {sweep['val_images']} "
             f"val images; the up-front checks over {sweep.get('list_lines', 'n/a')} list "
             f"lines. About **{hours(sweep['total_seconds'])}** on {sweep['device']}.", "",
             "| part | runs | time |", "|---|---|---|"]
    for kind, title in KIND_TITLES:
        if kind in kinds:
            lines.append(f"| {title}, trained and evaluated | {kinds[kind]['runs']} | "
                         f"{hours(kinds[kind]['seconds'])} |")
    checks = sweep.get("checks_seconds")
    lines.append("| checks before the first run (lists, every image and label, initial "
                 "weights) | | " + (hours(checks) if checks is not None else
                                    "not measured here (the GPU bundle lacks tqdm)") + " |")
    if sweep.get("python_layers_share") is not None:
        lines += ["", f"The Python layers (data, label shrink, template loss: on the CPU inside "
                  f"every iteration) take about {hours(sweep['python_layers_seconds'])}, "
                  f"{percent(sweep['python_layers_share'])} of the training."]
    if sweep.get("on_gpus"):
        lines += ["", "With `--gpus` (stage 1 alone first, then the fine-tunes one per GPU): "
                  + ", ".join(f"{n} GPU{'s' if n != '1' else ''} {hours(seconds)}"
                              for n, seconds in sweep["on_gpus"].items()) + "."]
    if not sweep.get("evaluation_measured", True):
        lines += ["", "Evaluation counted as test-net forwards (reading images and scoring "
                  "add a little)."]
    return lines


def report_markdown(report):
    """The Markdown report: the verdict, one line per step, then the details."""
    steps = report["steps"]
    lines = _header(report)
    for key, title in STEP_TITLES:
        step = steps.get(key)
        if step is not None:
            note = f" ({step['reason']})" if step.get("reason") else ""
            lines.append(f"| {title} | {step['status']}{note} | "
                         f"{reports.fmt(step.get('seconds'), 1)} |")
    missing = steps.get("libraries", {}).get("missing") or {}
    if missing:
        lines += ["", "## Missing libraries", ""]
        lines += [f"- `{path}`: {'; '.join(problems)}" for path, problems in missing.items()]
    if (steps.get("cpu_gpu_passes") or {}).get("nets"):
        lines += _passes(steps["cpu_gpu_passes"])
    if (steps.get("caffe_tests") or {}).get("filter"):
        lines += _tests(steps["caffe_tests"])
    if (steps.get("timings") or {}).get("train_seconds_per_iteration"):
        lines += _timings(steps["timings"])
    if (steps.get("extrapolation") or {}).get("total_seconds") is not None:
        lines += _sweep(steps["extrapolation"])
    for key, title in STEP_TITLES:
        step = steps.get(key) or {}
        if step.get("status") == FAIL and (step.get("output_tail") or step.get("error")):
            lines += ["", f"## {title}: output", "", "```",
                      (step.get("error") or step.get("output_tail")).strip(), "```"]
    return "\n".join(lines) + "\n"


def write_reports(report, out):
    """Write ``gpu_check.json`` and ``gpu_check.md`` into ``out``; returns both paths."""
    os.makedirs(out, exist_ok=True)
    json_path, md_path = os.path.join(out, "gpu_check.json"), os.path.join(out, "gpu_check.md")
    files.write_text(json_path, json.dumps(_json_ready(report), indent=1, sort_keys=True) + "\n")
    files.write_text(md_path, report_markdown(report))
    return json_path, md_path


def _json_ready(value):
    """Infinite and NaN numbers become null (JSON has neither)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, float):
        return reports.json_number(value) if not math.isinf(value) else None
    return value
