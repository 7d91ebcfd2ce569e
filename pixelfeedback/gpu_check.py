"""The GPU self-check: what `docker/gpu_check.sh` runs from the GPU bundle on a bare CUDA
machine, and the report it writes.

Steps, each recorded with its outcome and duration in one JSON and one Markdown report:

- ``libraries``: every ELF file of the bundle resolves its shared libraries (ldd);
- ``device_query``: ``caffe device_query`` sees the GPU;
- ``cpu_gpu_passes``: the full-width LargeFOV train nets (the control and each template
  loss, with the data and template-loss Python layers) run one forward and backward pass
  on the CPU and on the GPU from the same weights and batch; blobs, losses and parameter
  gradients must agree within ``TOLERANCES`` (Dropout is left out: CPU and GPU draw
  different masks);
- ``timings``: on the GPU at full width and batch 10, seconds per `caffe train` iteration
  of the control and of each loss, and of a test-net forward at 513;
- ``extrapolation``: the wall time of the whole Table 3.1 sweep (the runs of
  tools/reproduce_table.py's defaults, 3 seeds) on one such GPU, from those timings;
- ``caffe_tests``: Caffe's own GPU layer tests (``TESTS_FILTER``), last and bounded by
  ``--tests-timeout`` so that they never cost the timings.

The libraries are checked first and stop the check when one is missing (fail fast).

With ``--cpu`` the check runs here without a GPU: the GPU halves of the passes and the GPU
tests are skipped, the timings are taken on the CPU (for the pipeline, not the numbers).
Only numpy, protobuf, six, pycaffe and the toolkit's nets, training and report modules are
imported (of pixelfeedback.sweep only its plan, which needs nothing more): the bundle carries nothing
else (its stand-ins for pycaffe's scikit-image/SciPy imports and for cv2/PIL are in
docker/gpu_bundle/shims/).
"""
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np

from pixelfeedback import files, reports
from python_layers import ToolkitError, voc_io

PASS, FAIL, SKIP = "pass", "fail", "skipped"
# Largest |GPU - CPU| allowed, relative to the largest |CPU| value of the same blob.
TOLERANCES = {"forward": 1e-3, "gradient": 1e-2}
EXACT_BLOBS = ("data", "label")          # the data layer's output: identical on both
FORWARD_BLOBS = ("fc7", "fc8_voc12", "loss", "loss_template")
GRADIENT_PARAMS = ("fc6", "fc7", "fc8_voc12")  # what the fine-tune trains
COMPARE_LAMBDA = 1.0   # the template loss weighs as much as the softmax: its gradient shows
COMPARE_BATCH = 2      # per pass; full width (CPU time on the GPU machine stays short)
TIMING_BATCH = 10      # the sweep's batch
# Caffe's GPU tests in float: the typed tests' instance /2 is GPUDevice<float>, plus the
# GPU-only tests and the device printout; without the recurrent layers (not in these nets,
# and the slowest gradient checks) and the benchmark.
TESTS_FILTER = "*/2.*:*GPU*:PlatformTest.*:-LSTM*:RNN*:BenchmarkTest*"
VOC12_VAL_IMAGES = 1449  # the images each sweep run is evaluated on (VOC 2012 val)
ITERATION_SPEED = re.compile(r"Iteration (\d+) \(([0-9.]+) iter/s, ([0-9.]+)s/(\d+) iters\)")
NO_GPU = "no GPU: --cpu"


# ----------------------------------------------------------------------------- libraries

# What the bundle leaves to the machine: glibc (its binaries need GLIBC 2.35 at most) and
# CUDA (the driver's libcuda and CUDA 13's cudart, cuBLAS and cuRAND). Everything else it
# carries (docker/make_gpu_bundle.sh asks ``libraries_to_bundle``).
SYSTEM_LIBRARIES = ("linux-vdso.so.", "ld-linux-x86-64.so.", "libc.so.", "libm.so.", "libdl.so.",
                    "libpthread.so.", "librt.so.", "libutil.so.", "libresolv.so.")
CUDA_LIBRARIES = ("libcudart.so.", "libcublas.so.", "libcublasLt.so.", "libcurand.so.",
                  "libcuda.so.", "libnvidia-")
LDD_LINE = re.compile(r"^\s*(\S+)(?: => (\S+|not found))?(?: \(0x[0-9a-f]+\))?\s*$")


def machine_library(name):
    """True for a library the machine provides (glibc's or CUDA's), by file name."""
    return os.path.basename(name).startswith(SYSTEM_LIBRARIES + CUDA_LIBRARIES)


def resolved_libraries(path):
    """{library name: the file ldd resolves it to, or None when not found} of an ELF file;
    ldd's version errors (``version `GLIBC_2.36' not found``) come under "errors". The
    file's own folder is searched too: a wheel's bundled libraries (numpy.libs) find each
    other there when its extension loads them."""
    search = os.pathsep.join(filter(None, [os.path.dirname(os.path.abspath(path)),
                                           os.environ.get("LD_LIBRARY_PATH")]))
    result = subprocess.run(["ldd", path], capture_output=True, text=True,
                            env=dict(os.environ, LD_LIBRARY_PATH=search))
    libraries, errors = {}, []
    for line in (result.stdout + result.stderr).splitlines():
        if "version `" in line or "no version information" in line:
            errors.append(line.strip())
            continue
        match = LDD_LINE.match(line)
        if match and match.group(2) != "statically":
            name, target = match.group(1), match.group(2)
            libraries[os.path.basename(name)] = None if target == "not found" else (target or name)
    if errors:
        libraries["errors"] = errors
    return libraries


def library_report(files, bundle):
    """{"missing": {file: [names or ldd errors]}, "outside": {library: path}}: what does
    not resolve, and what resolves outside the bundle though not a machine library."""
    missing, outside = {}, {}
    bundle = os.path.realpath(bundle)
    for path in files:
        resolved = resolved_libraries(path)
        problems = resolved.pop("errors", [])
        problems += [name for name, target in resolved.items() if target is None]
        if problems:
            missing[path] = problems
        for name, target in resolved.items():
            if target and not machine_library(name) and \
                    not os.path.realpath(target).startswith(bundle + os.sep):
                outside[name] = target
    return {"missing": missing, "outside": outside}


def libraries_to_bundle(files):
    """The shared libraries the ELF ``files`` need that the machine does not provide, as
    sorted (name, resolved file) pairs; a library ldd cannot find raises ToolkitError."""
    needed = {}
    for path in files:
        resolved = resolved_libraries(path)
        resolved.pop("errors", None)
        for name, target in resolved.items():
            if machine_library(name):
                continue
            if target is None:
                raise ToolkitError(f"{path} needs {name}, which is not found here; install it "
                                   "or rebuild the CUDA Caffe (make cuda-build)")
            needed[name] = target
    return sorted(needed.items())


def elf_files(root):
    """The ELF executables and shared libraries under ``root`` (sorted)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(path)
    return sorted(found)


def step_libraries(bundle):
    files = elf_files(bundle)
    found = library_report(files, bundle)
    return {"status": FAIL if found["missing"] else PASS, "files_checked": len(files), **found}


# ----------------------------------------------------------------------------- the steps


def step_device_query(caffe, gpu):
    result = subprocess.run([caffe, "device_query", "-gpu", str(gpu)], capture_output=True,
                            text=True, timeout=120,
                            env=dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0"))
    text = result.stdout + result.stderr
    fields = dict(re.findall(r"\] (Name|Major revision number|Minor revision number|"
                             r"Total global memory|Number of multiprocessors):\s+(.+)", text))
    ok = result.returncode == 0 and "Name" in fields
    return {"status": PASS if ok else FAIL, "name": fields.get("Name"),
            "compute_capability": (f"{fields['Major revision number']}."
                                   f"{fields['Minor revision number']}"
                                   if "Major revision number" in fields else None),
            "memory_bytes": int(fields["Total global memory"]) if "Total global memory" in fields
            else None,
            "multiprocessors": fields.get("Number of multiprocessors"),
            "output_tail": None if ok else text[-2000:]}


def write_data(root, count=12, size=(375, 500), num_classes=21, seed=0):
    """A tiny VOC-like data set (8-bit PNG images and palette labels of random boxes) and
    its DeepLab list file; returns (root, list path)."""
    rng = np.random.RandomState(seed)
    for folder in ("JPEGImages", "SegmentationClassAug"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    lines = []
    for index in range(count):
        height, width = size
        label = np.zeros(size, np.uint8)
        image = rng.randint(0, 60, (height, width, 3)).astype(np.uint8)
        for _ in range(3):
            cls = rng.randint(1, num_classes)
            y, x = rng.randint(0, height - 60), rng.randint(0, width - 60)
            h, w = rng.randint(40, height - y + 1), rng.randint(40, width - x + 1)
            label[y:y + h, x:x + w] = cls
            image[y:y + h, x:x + w] = (rng.randint(60, 255, 3) * 0.8).astype(np.uint8)
        label[rng.rand(*size) < 0.01] = voc_io.IGNORE_LABEL
        name = f"check_{index:03d}"
        _write_png_rgb(os.path.join(root, "JPEGImages", name + ".png"), image)
        files.write_label(os.path.join(root, "SegmentationClassAug", name + ".png"), label)
        lines.append(f"/JPEGImages/{name}.png /SegmentationClassAug/{name}.png")
    list_path = os.path.join(root, "list.txt")
    files.write_text(list_path, "\n".join(lines) + "\n")
    return root, list_path


def _write_png_rgb(path, image):
    """An RGB PNG, written by the bundle's PNG writer when present (the bundle has no
    OpenCV), else by Pillow."""
    try:
        import _png  # the bundle's stand-in codec (docker/gpu_bundle/shims/_png.py)
    except ImportError:
        from PIL import Image
        Image.fromarray(image).save(path, format="PNG")
        return
    with open(path, "wb") as f:
        f.write(_png.encode(image))


def comparison_net(path, loss, data_root, list_file, width_div, batch=COMPARE_BATCH):
    """Write the train net of ``loss`` without Dropout (CPU and GPU draw different masks)."""
    from pixelfeedback.nets import largefov
    from pixelfeedback.nets.netspec import write_net
    net = largefov.train_net(loss, COMPARE_LAMBDA, data_root, list_file, batch_size=batch,
                             crop=321, width_div=width_div, seed=0, mirror=False,
                             shuffle=False)
    keep = [layer for layer in net.layer if layer.type != "Dropout"]
    del net.layer[:]
    net.layer.extend(keep)
    return write_net(net, path)


def one_pass(caffe, net_path, weights=None):
    """Forward and backward once; returns ({blob: array}, {param: gradient}, net)."""
    net = caffe.Net(net_path, caffe.TRAIN, **({"weights": weights} if weights else {}))
    net.forward()
    net.backward()
    blobs = {name: net.blobs[name].data.copy() for name in EXACT_BLOBS + FORWARD_BLOBS
             if name in net.blobs}
    grads = {name: net.params[name][0].diff.copy() for name in GRADIENT_PARAMS}
    return blobs, grads, net


def relative_difference(reference, other):
    """max |other - reference| / max |reference| (0 when both are all zero)."""
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    diff = float(np.max(np.abs(other - reference))) if reference.size else 0.0
    return diff / scale if scale > 0 else diff


def compare_passes(cpu, gpu):
    """Per blob and gradient: the relative difference, its tolerance and the verdict."""
    rows = []
    for kind, ref, other in (("blob", cpu[0], gpu[0]), ("gradient", cpu[1], gpu[1])):
        for name in ref:
            if kind == "blob" and name in EXACT_BLOBS:
                diff = float(np.max(np.abs(other[name] - ref[name]))) if ref[name].size else 0.0
                rows.append({"what": f"{kind} {name}", "difference": diff, "tolerance": 0.0,
                             "status": PASS if diff == 0 else FAIL})
                continue
            tolerance = TOLERANCES["forward" if kind == "blob" else "gradient"]
            diff = relative_difference(ref[name], other[name])
            rows.append({"what": f"{kind} {name}", "difference": diff, "tolerance": tolerance,
                         "status": PASS if diff <= tolerance else FAIL})
    return rows


def step_cpu_gpu_passes(work, data_root, list_file, losses, gpu, width_div):
    import caffe
    results = {}
    for loss in losses:
        net_path = comparison_net(os.path.join(work, f"compare_{loss}.prototxt"), loss,
                                  data_root, list_file, width_div)
        caffe.set_mode_cpu()
        caffe.set_random_seed(0)
        start = time.time()
        cpu = one_pass(caffe, net_path)
        cpu_seconds = time.time() - start
        weights = os.path.join(work, f"compare_{loss}.caffemodel")
        cpu[2].save(weights)
        entry = {"cpu_seconds": cpu_seconds,
                 "losses_cpu": {k: float(cpu[0][k].ravel()[0]) for k in ("loss", "loss_template")
                                if k in cpu[0]}}
        if gpu is None:
            entry.update(status=SKIP, reason=NO_GPU)
        else:
            caffe.set_device(gpu)
            caffe.set_mode_gpu()
            start = time.time()
            other = one_pass(caffe, net_path, weights)
            entry["gpu_seconds"] = time.time() - start
            entry["comparisons"] = compare_passes(cpu, other)
            entry["status"] = (PASS if all(row["status"] == PASS for row in entry["comparisons"])
                               else FAIL)
            caffe.set_mode_cpu()
        results[loss] = entry
        os.remove(weights)
    statuses = {entry["status"] for entry in results.values()}
    status = FAIL if FAIL in statuses else (SKIP if statuses == {SKIP} else PASS)
    return {"status": status, "batch": COMPARE_BATCH, "width_div": width_div,
            "lambda": COMPARE_LAMBDA, "tolerances": TOLERANCES, "nets": results}


def step_caffe_tests(tests_binary, tests_dir, gpu, timeout):
    """Caffe's own GPU layer tests; without a GPU only the listing (the binary loads)."""
    if gpu is None:
        result = subprocess.run([tests_binary, "--gtest_list_tests",
                                 f"--gtest_filter={TESTS_FILTER}"], capture_output=True,
                                text=True, cwd=tests_dir, timeout=timeout)
        cases = [line for line in result.stdout.splitlines() if line.startswith("  ")]
        return {"status": SKIP if result.returncode == 0 and cases else FAIL,
                "reason": NO_GPU, "filter": TESTS_FILTER, "tests_selected": len(cases),
                "output_tail": None if cases else (result.stdout + result.stderr)[-2000:]}
    start = time.time()
    try:
        result = subprocess.run([tests_binary, str(gpu), f"--gtest_filter={TESTS_FILTER}"],
                                capture_output=True, text=True, cwd=tests_dir, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return {"status": FAIL, "filter": TESTS_FILTER, "reason": f"timed out after {timeout} s",
                "output_tail": (exc.stdout or b"")[-2000:].decode(errors="replace")
                if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-2000:]}
    text = result.stdout + result.stderr
    passed = re.search(r"\[  PASSED  \] (\d+) test", text)
    failed = re.findall(r"\[  FAILED  \] (\S+\.\S+)", text)
    started = re.findall(r"\[ RUN      \] (\S+)", text)
    ok = result.returncode == 0 and passed is not None and not failed
    if not ok and passed is None and started:  # the binary died inside a test
        failed.append(f"{started[-1]} (the binary stopped there, exit {result.returncode})")
    return {"status": PASS if ok else FAIL, "filter": TESTS_FILTER,
            "passed": int(passed.group(1)) if passed else 0,
            "failed": sorted(set(failed)), "seconds": time.time() - start,
            "output_tail": None if ok else text[-3000:]}


def seconds_per_iteration(log_text):
    """Seconds per iteration from `caffe train`'s display lines, leaving out the first
    (which holds the start-up)."""
    speeds = [(float(m.group(3)), int(m.group(4))) for m in ITERATION_SPEED.finditer(log_text)]
    speeds = speeds[1:] or speeds
    if not speeds:
        raise ToolkitError("no 'Iteration N (x iter/s, ...)' lines in the training log; "
                           "the caffe tool printed no timing")
    return sum(s for s, _ in speeds) / sum(n for _, n in speeds)


def time_training(work, loss, data_root, list_file, gpu, iterations, width_div, batch):
    """Seconds per `caffe train` iteration of ``loss`` (lambda 0.01, the sweep's first)."""
    from pixelfeedback.nets import largefov
    from pixelfeedback.training import train
    run_dir = os.path.join(work, f"train_{loss}")
    display = max(iterations // 4, 1)
    solver_path = largefov.write_experiment(
        run_dir, loss, lam=0.01, data_root=data_root, list_file=list_file, batch_size=batch,
        crop=321, width_div=width_div, seed=0, iterations=iterations,
        solver_overrides={"display": display, "snapshot": 0, "snapshot_after_train": False})
    train(solver_path, run_dir, gpu=gpu)
    with open(os.path.join(run_dir, "train.log"), errors="replace") as f:
        return seconds_per_iteration(f.read())


def time_test_forward(caffe, work, gpu, width_div, size=513, repeats=5):
    """Seconds per forward of the test net (with its Zoom Python layer) at ``size``."""
    from pixelfeedback.nets import largefov
    from pixelfeedback.nets.netspec import write_net
    path = write_net(largefov.test_net(width_div=width_div, size=size),
                     os.path.join(work, f"test_{size}.prototxt"))
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
    net = caffe.Net(path, caffe.TEST)
    net.blobs["data"].data[...] = np.random.RandomState(0).randn(*net.blobs["data"].data.shape)
    net.forward()  # warm-up: allocations, cuBLAS handles
    start = time.time()
    for _ in range(repeats):
        net.forward()
    seconds = (time.time() - start) / repeats
    caffe.set_mode_cpu()
    return seconds


def step_timings(work, data_root, list_file, losses, gpu, iterations, width_div):
    import caffe
    per_loss = {loss: time_training(work, loss, data_root, list_file, gpu, iterations,
                                    width_div, TIMING_BATCH) for loss in losses}
    return {"status": PASS, "device": "cpu" if gpu is None else f"gpu {gpu}",
            "batch": TIMING_BATCH, "crop": 321, "width_div": width_div,
            "iterations_timed": iterations, "train_seconds_per_iteration": per_loss,
            "test_forward_seconds_513": time_test_forward(caffe, work, gpu, width_div)}


def sweep_wall_time(timings, runs, iterations, val_images=VOC12_VAL_IMAGES):
    """Extrapolated seconds of the sweep: per run, its iterations at its loss's speed (the
    control runs at the softmax speed) plus one test-net forward per validation image."""
    per_iteration = timings["train_seconds_per_iteration"]
    forward = timings["test_forward_seconds_513"]
    rows = []
    for loss, lam, seed in runs:
        speed = per_iteration.get(loss, per_iteration["softmax"])  # control runs: softmax
        train_s, eval_s = iterations * speed, val_images * forward
        rows.append({"run": f"{loss} lambda={lam:g} seed={seed}", "train_seconds": train_s,
                     "evaluate_seconds": eval_s})
    total = sum(r["train_seconds"] + r["evaluate_seconds"] for r in rows)
    return {"runs": len(rows), "iterations_per_run": iterations, "val_images": val_images,
            "total_seconds": total, "total_hours": total / 3600.0, "per_run": rows}


def sweep_plan(seeds=None):
    """The runs of the Table 3.1 sweep (tools/reproduce_table.py's defaults, or these
    ``seeds``) as JSON data. The bundle maker stores it in MANIFEST.json."""
    from pixelfeedback.sweep.plan import SweepConfig
    config = SweepConfig() if seeds is None else SweepConfig(seeds=seeds)
    return {"runs": [list(run) for run in config.runs()], "iterations": config.iterations,
            "seeds": list(config.seeds)}


def step_extrapolation(timings, plan):
    result = sweep_wall_time(timings, plan["runs"], plan["iterations"])
    result.update(status=PASS, device=timings["device"], seeds=plan["seeds"])
    return result


# ----------------------------------------------------------------------------- the report

STEP_TITLES = (("libraries", "Shared libraries resolve"), ("device_query", "caffe device_query"),
               ("cpu_gpu_passes", "CPU vs GPU forward and backward"),
               ("caffe_tests", "Caffe's own GPU layer tests"),
               ("timings", "Timings"), ("extrapolation", "Table 3.1 sweep, extrapolated"))


def overall_status(steps):
    """fail if any step failed, else pass (skipped steps are listed, not failures)."""
    return FAIL if any(step.get("status") == FAIL for step in steps.values()) else PASS


def hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def report_markdown(report):
    """The Markdown report: the verdict, one line per step, then the details."""
    steps = report["steps"]
    lines = [f"# GPU check: {report['status'].upper()}", "",
             f"- machine: {report.get('machine', 'n/a')}",
             f"- GPU: {report.get('gpu_label', 'n/a')}",
             f"- bundle: {report.get('bundle', {}).get('recipe_hash', 'n/a')}"
             f" (CUDA {report.get('bundle', {}).get('cuda', 'n/a')}, built for sm_"
             f"{report.get('bundle', {}).get('cuda_arch', 'n/a')})",
             f"- wall time of the check: {report.get('seconds', 0):.0f} s", "",
             "| step | status | seconds |", "|---|---|---|"]
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
    passes = steps.get("cpu_gpu_passes")
    if passes and passes.get("nets"):
        lines += ["", "## CPU vs GPU passes", "",
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
    tests = steps.get("caffe_tests")
    if tests and tests.get("filter"):
        lines += ["", "## Caffe's own tests", "", f"Filter `{tests['filter']}`: "
                  + (f"{tests['tests_selected']} tests listed (not run: {tests['reason']})"
                     if tests.get("reason") == NO_GPU else
                     f"{tests.get('passed', 0)} passed, failed: "
                     f"{', '.join(tests.get('failed') or []) or 'none'}")]
    timings = steps.get("timings")
    if timings and timings.get("train_seconds_per_iteration"):
        lines += ["", f"## Timings ({timings['device']}, batch {timings['batch']}, crop "
                  f"{timings['crop']}, width_div {timings['width_div']})", "",
                  "| what | seconds |", "|---|---|"]
        for loss, seconds in timings["train_seconds_per_iteration"].items():
            lines.append(f"| caffe train iteration, {'control' if loss == 'softmax' else loss}"
                         f" | {seconds:.3f} |")
        lines.append(f"| test-net forward at 513 | {timings['test_forward_seconds_513']:.3f} |")
    sweep = steps.get("extrapolation")
    if sweep and sweep.get("total_seconds") is not None:
        lines += ["", "## Table 3.1 sweep on one such device, extrapolated", "",
                  f"{sweep['runs']} runs (seeds {', '.join(map(str, sweep.get('seeds', [])))})"
                  f" x {sweep['iterations_per_run']} iterations, each "
                  f"evaluated on {sweep['val_images']} validation images: about "
                  f"**{hours(sweep['total_seconds'])}** on {sweep['device']} (training at the "
                  "measured speeds, evaluation as test-net forwards; reading images and "
                  "scoring add a little)."]
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


# ----------------------------------------------------------------------------- the run

def _timed(function, *args):
    """Run one step; an exception becomes a failed step that names it."""
    start = time.time()
    try:
        result = function(*args)
    except Exception as exc:  # one failing step must not hide the others' results
        result = {"status": FAIL, "error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = time.time() - start
    return result


def run_check(args):
    """All steps, then the reports; returns 0 when no step failed, else 1."""
    start = time.time()
    bundle = os.path.abspath(args.bundle)
    gpu = None if args.cpu else args.gpu
    work = os.path.join(os.path.abspath(args.out), "work")
    os.makedirs(work, exist_ok=True)
    caffe_tool = os.path.join(bundle, "caffe", "bin", "caffe")
    from pixelfeedback.nets.largefov import TABLE31_LOSSES as losses  # the control, then each
    manifest_path = os.path.join(bundle, "MANIFEST.json")
    manifest = json.load(open(manifest_path)) if os.path.isfile(manifest_path) else {}
    report = {"machine": os.uname().nodename, "bundle": manifest, "gpu": gpu,
              "command": " ".join(sys.argv), "steps": {}}
    steps = report["steps"]

    def record(key, function, *step_args):
        steps[key] = _timed(function, *step_args)
        print(f"gpu_check: {key}: {steps[key]['status']} ({steps[key]['seconds']:.1f} s)",
              flush=True)

    record("libraries", step_libraries, bundle)
    if steps["libraries"]["status"] == FAIL:  # fail fast: nothing else could load
        return _finish(report, args.out, start)
    if gpu is None:
        steps["device_query"] = {"status": SKIP, "reason": NO_GPU}
    else:
        record("device_query", step_device_query, caffe_tool, gpu)
    data_root, list_file = write_data(os.path.join(work, "data"))
    record("cpu_gpu_passes", step_cpu_gpu_passes, work, data_root, list_file, losses, gpu,
           args.width_div)
    record("timings", step_timings, work, data_root, list_file, losses, gpu,
           args.iterations, args.width_div)
    if steps["timings"]["status"] == PASS:
        # the bundle's plan (MANIFEST.json); outside a bundle, the sweep's own
        record("extrapolation", lambda: step_extrapolation(
            steps["timings"], manifest.get("sweep_plan") or sweep_plan()))
    # last: the longest step, bounded by --tests-timeout, never costs the timings
    record("caffe_tests", step_caffe_tests, os.path.join(bundle, "caffe", "bin", "caffe-tests"),
           os.path.join(bundle, "caffe", "share", "caffe-tests"), gpu, args.tests_timeout)
    return _finish(report, args.out, start)


def _finish(report, out, start):
    """Label, time and write the report; the exit status (0 when no step failed)."""
    device = report["steps"].get("device_query", {})
    report["gpu_label"] = (f"{device.get('name')} (compute capability "
                           f"{device.get('compute_capability')})" if device.get("name")
                           else NO_GPU if report["gpu"] is None else "not found")
    report["seconds"] = time.time() - start
    report["status"] = overall_status(report["steps"])
    json_path, md_path = write_reports(report, out)
    print(f"gpu_check: {report['status'].upper()}; reports {json_path} and {md_path}")
    return 0 if report["status"] == PASS else 1
