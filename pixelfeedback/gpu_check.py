"""The GPU self-check: what `docker/gpu_check.sh` runs from the GPU bundle on a bare CUDA
machine, and `docker run --gpus all ... gpu-check` in the CUDA image (tools/gpu_check.py
without --bundle: the installed toolkit), and the report it writes.

Steps, each recorded with its outcome and duration in one JSON and one Markdown report
(``pixelfeedback.gpu_report``):

- ``libraries``: every ELF file of the bundle (or of the installed Caffe) resolves its
  shared libraries (ldd);
- ``device_query``: ``caffe device_query`` sees the GPU;
- ``cpu_gpu_passes``: the full-width LargeFOV train nets (the control and each template
  loss, with the data and template-loss Python layers) run one forward and backward pass
  on the CPU and on the GPU from the same weights and batch; blobs, losses and parameter
  gradients must agree within ``TOLERANCES`` (Dropout is left out: CPU and GPU draw
  different masks);
- ``timings`` and ``extrapolation``: seconds per iteration of the control, each loss and
  stage 1 at the thesis's scale, the Python layers' share of an iteration, seconds per val
  image and of the up-front checks, and the DEFAULT sweep's wall time on one such GPU
  (``pixelfeedback.gpu_timings`` says how);
- ``caffe_tests``: Caffe's own GPU layer tests (``TESTS_FILTER``; the bundle has the test
  binary, the image does not), last and bounded by ``--tests-timeout`` so that they never
  cost the timings.

The libraries are checked first and stop the check when one is missing (fail fast).

With ``--cpu`` the check runs here without a GPU: the GPU halves of the passes and the GPU
tests are skipped, the timings are taken on the CPU (for the pipeline, not the numbers).
Only numpy, protobuf, six, pycaffe and the toolkit's nets, training and report modules are
imported (of pixelfeedback.sweep only its plan, which needs nothing more): the bundle carries nothing
else (its stand-ins for pycaffe's scikit-image/SciPy imports and for cv2/PIL are in
docker/gpu_bundle/shims/; the evaluation's timing is taken where it imports, the image).
"""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

from pixelfeedback import files
from pixelfeedback.gpu_report import FAIL, NO_GPU, PASS, SKIP, overall_status, write_reports
from pixelfeedback.gpu_timings import step_extrapolation, step_timings, sweep_plan
from python_layers import ToolkitError, voc_io

# Largest |GPU - CPU| allowed, relative to the largest |CPU| value of the same blob.
TOLERANCES = {"forward": 1e-3, "gradient": 1e-2}
EXACT_BLOBS = ("data", "label")          # the data layer's output: identical on both
FORWARD_BLOBS = ("fc7", "fc8_voc12", "loss", "loss_template")
GRADIENT_PARAMS = ("fc6", "fc7", "fc8_voc12")  # what the fine-tune trains
COMPARE_LAMBDA = 1.0   # the template loss weighs as much as the softmax: its gradient shows
COMPARE_BATCH = 2      # per pass; full width (CPU time on the GPU machine stays short)
# Caffe's GPU tests in float: the typed tests' instance /2 is GPUDevice<float>, plus the
# GPU-only tests and the device printout; without the recurrent layers (not in these nets,
# and the slowest gradient checks) and the benchmark.
TESTS_FILTER = "*/2.*:*GPU*:PlatformTest.*:-LSTM*:RNN*:BenchmarkTest*"


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
    """Caffe's own GPU layer tests; without a GPU only the listing (the binary loads);
    skipped without ``tests_binary`` (None: the image's Caffe has none; the bundle's has)."""
    if tests_binary is None:
        return {"status": SKIP, "filter": TESTS_FILTER,
                "reason": "this Caffe has no test binary (build/caffe/bin/caffe-tests: "
                          "docker/build_caffe.sh --with-tests; the GPU bundle has it)"}
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


def installed_caffe():
    """The prefix of the Caffe this Python imports (build/caffe: bin/, lib/ and pycaffe)."""
    import caffe
    return os.path.realpath(os.path.join(os.path.dirname(caffe.__file__), *[os.pardir] * 4))


def run_check(args):
    """All steps, then the reports; returns 0 when no step failed, else 1. Without
    ``args.bundle``: the installed toolkit (the CUDA image), whose Caffe is checked."""
    from pixelfeedback.training import caffe_binary
    start = time.time()
    gpu = None if args.cpu else args.gpu
    work = os.path.join(os.path.abspath(args.out), "work")
    os.makedirs(work, exist_ok=True)
    if args.bundle:
        bundle = os.path.abspath(args.bundle)
        caffe_prefix = os.path.join(bundle, "caffe")
        caffe_tool = os.path.join(caffe_prefix, "bin", "caffe")
    else:
        bundle, caffe_prefix = None, installed_caffe()
        caffe_tool = caffe_binary()
    from pixelfeedback.nets.largefov import TABLE31_LOSSES as losses  # the control, then each
    manifest_path = os.path.join(bundle, "MANIFEST.json") if bundle else ""
    manifest = json.load(open(manifest_path)) if os.path.isfile(manifest_path) else {}
    report = {"machine": os.uname().nodename, "bundle": manifest, "gpu": gpu,
              "command": " ".join(sys.argv), "steps": {}}
    steps = report["steps"]

    def record(key, function, *step_args):
        steps[key] = _timed(function, *step_args)
        print(f"gpu_check: {key}: {steps[key]['status']} ({steps[key]['seconds']:.1f} s)",
              flush=True)

    record("libraries", step_libraries, bundle or caffe_prefix)
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
    if steps["timings"]["status"] == PASS:  # the default sweep of this toolkit
        record("extrapolation", lambda: step_extrapolation(steps["timings"], sweep_plan()))
    # last: the longest step, bounded by --tests-timeout, never costs the timings
    tests_binary = os.path.join(caffe_prefix, "bin", "caffe-tests")
    if not bundle and not os.path.isfile(tests_binary):
        tests_binary = None  # the image's Caffe is built without them; the bundle's has them
    record("caffe_tests", step_caffe_tests, tests_binary,
           os.path.join(caffe_prefix, "share", "caffe-tests"), gpu, args.tests_timeout)
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
