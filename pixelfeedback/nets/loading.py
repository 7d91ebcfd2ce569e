"""Loading a net: the one ``load_net``, and the checks that catch first what Caffe would
abort the whole process on (an unknown layer type, a Python layer that cannot be imported,
an unknown bottom blob, ``--gpu`` on a CPU-only build).

- ``check_prototxt(path, phase=None)`` -> the parsed ``caffe_pb2.NetParameter``
- ``check_gpu(device)``: probes GPU ``device`` in a subprocess (cached per device)
- ``use_device(gpu)``: CPU mode for None, else the checked GPU
- ``load_net(prototxt, weights=None, gpu=None, phase="TEST", require_all=True)`` -> caffe.Net

Caffe is imported inside the functions, so importing this module changes nothing.
"""
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys

from pixelfeedback.nets.weights import fit_report, load_weights, missing_note
from python_layers import ToolkitError

PHASES = ("TEST", "TRAIN")
GPU_PROBE_TIMEOUT_S = 120
CPU_ONLY_ADVICE = "build the CUDA one with `docker/build_caffe.sh --cuda`"

_gpu_checks = {}   # device -> None (usable) or the ToolkitError message; per process


# ----------------------------------------------------------------------------- the prototxt

def check_prototxt(path, phase=None):
    """Check a net prototxt as far as Caffe would abort on it, without building the net.

    The file exists and parses as a NetParameter; every layer's type (V2 ``layer`` or V1
    ``layers``) is in ``caffe.layer_type_list()``; every Python layer's module imports and
    has its class. With ``phase`` ("TEST" or "TRAIN"), only the layers of that phase are
    checked, and also that every bottom blob is made by an earlier layer and that no top is
    made twice. Raises ToolkitError naming the file and layer; returns the NetParameter.
    """
    import caffe
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from pixelfeedback.fixations import graph   # V1 type names, Caffe's phase rules

    path = os.fspath(path)
    if phase is not None and phase not in PHASES:
        raise ToolkitError(f"phase must be 'TEST' or 'TRAIN', got {phase!r}")
    if not os.path.isfile(path):
        raise ToolkitError(f"net prototxt not found: {path}; regenerate prototxt/ with "
                           "`make prototxt` (or give the path of an existing .prototxt)")
    net_param = caffe_pb2.NetParameter()
    try:
        with open(path) as f:
            text_format.Merge(f.read(), net_param)
    except text_format.ParseError as exc:
        raise ToolkitError(f"{path}: not a net prototxt this Caffe can read ({exc}); fix that "
                           "line (DeepLab-only fields such as interp_param must be removed)") \
            from None
    except UnicodeDecodeError as exc:
        raise ToolkitError(f"{path}: not a text prototxt ({exc}); a binary .caffemodel goes "
                           "to --weights, the net definition is the .prototxt") from None
    if len(net_param.layer) and len(net_param.layers):
        raise ToolkitError(f"{path}: mixes V1 'layers' and V2 'layer' fields, which Caffe "
                           "refuses; write all layers the same way (upgrade_net_proto_text "
                           "converts V1 nets)")

    phase_value = None if phase is None else getattr(caffe_pb2, phase)
    layers = []   # (name, V2 type, proto)
    if len(net_param.layers):
        enum = caffe_pb2.V1LayerParameter.LayerType
        for proto in net_param.layers:
            enum_name = enum.Name(proto.type)
            if enum_name not in graph.V1_TYPES:
                raise ToolkitError(f"{path}: V1 layer {proto.name!r} has type {enum_name}, "
                                   "which has no V2 name; write the net with V2 'layer' fields")
            layers.append((proto.name, graph.V1_TYPES[enum_name], proto))
    else:
        layers = [(proto.name, proto.type, proto) for proto in net_param.layer]
    if phase_value is not None:
        layers = [entry for entry in layers if graph.layer_included(entry[2], phase_value)]

    known = set(caffe.layer_type_list())
    for name, layer_type, proto in layers:
        if layer_type not in known:
            raise ToolkitError(
                f"{path}: layer {name!r} has type {layer_type!r}, which this Caffe lacks "
                "(DeepLab-only layers such as Interp must be replaced by the toolkit's Python "
                "layers, see python_layers/; Python layers need a Caffe built with "
                "WITH_PYTHON_LAYER, as docker/build_caffe.sh does)")
        if layer_type == "Python":
            _check_python_layer(path, name, proto.python_param)
    if phase_value is not None:
        _check_blobs(path, list(net_param.input), layers)
    return net_param


def _check_python_layer(path, name, param):
    """The module of a Python layer imports and has the class (Caffe would abort)."""
    where = f"{path}: Python layer {name!r}"
    if not param.module or not param.layer:
        raise ToolkitError(f"{where} needs python_param {{ module: ... layer: ... }} "
                           "(e.g. module: \"python_layers.interp\" layer: \"Zoom\")")
    try:
        module = importlib.import_module(param.module)
    except Exception as exc:   # any failure to import is what Caffe would abort on
        raise ToolkitError(
            f"{where}: cannot import module {param.module!r} ({type(exc).__name__}: {exc}); "
            "check python_param.module (the toolkit's layers are python_layers.<module>, "
            "with the repository root on the import path)") from None
    if not inspect.isclass(getattr(module, param.layer, None)):
        classes = sorted(n for n, obj in vars(module).items()
                         if inspect.isclass(obj) and obj.__module__ == module.__name__
                         and not n.startswith("_"))
        raise ToolkitError(
            f"{where}: module {param.module!r} has no class {param.layer!r}; check "
            f"python_param.layer (its classes: {', '.join(classes) or 'none'})")


def _check_blobs(path, inputs, layers):
    """Caffe's Net::Init blob checks (it aborts on them): every bottom is made earlier,
    and a top is made once (in place only as the same-index bottom)."""
    made = set(inputs)
    for name, _, proto in layers:
        for blob in proto.bottom:
            if blob not in made:
                raise ToolkitError(
                    f"{path}: layer {name!r} reads blob {blob!r} that no earlier layer makes; "
                    "check its bottom names and put the layers in order")
        for index, blob in enumerate(proto.top):
            in_place = index < len(proto.bottom) and proto.bottom[index] == blob
            if blob in made and not in_place:
                raise ToolkitError(
                    f"{path}: layer {name!r} makes blob {blob!r}, which an earlier layer "
                    "already makes; give the top another name (in-place layers use the "
                    "same name as their bottom)")
            made.add(blob)


# ----------------------------------------------------------------------------- the device

_PROBE = ("import sys, caffe; caffe.set_device(int(sys.argv[1])); caffe.set_mode_gpu(); "
          "print('gpu ok')")


def check_gpu(device, flag="--gpu"):
    """Raise ToolkitError unless this Caffe can use GPU ``device``; the message names the
    command-line ``flag`` that asked for it (``--gpu``, or ``--gpus`` for the sweep's workers).

    Probed in a subprocess: ``set_device``/``set_mode_gpu`` abort a CPU-only build (or on
    a missing device) with SIGABRT, which no ``try`` can catch. The answer is cached per
    device for the process.
    """
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise ToolkitError(f"GPU id must be an integer >= 0, got {device!r}")
    if device not in _gpu_checks:
        _gpu_checks[device] = _probe_gpu(device)
    if _gpu_checks[device] is not None:
        message = _gpu_checks[device]
        if flag != "--gpu":
            message = message.replace("without --gpu", f"without {flag}")
        raise ToolkitError(message)


def _probe_gpu(device):
    """None when GPU ``device`` works in a fresh process, else the error message."""
    spec = importlib.util.find_spec("caffe")
    if spec is None or not spec.origin:
        return (f"cannot use GPU {device}: Caffe is not importable; build it with "
                "`make setup` and run with .venv/bin/python")
    caffe_dir = os.path.dirname(spec.origin)
    env = dict(os.environ)
    # the probe imports the same caffe as this process, whatever put it on sys.path
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(caffe_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                        if p])
    env.setdefault("GLOG_minloglevel", "2")   # FATAL lines still come through
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(device)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=GPU_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return (f"cannot use GPU {device}: probing it took over {GPU_PROBE_TIMEOUT_S} s "
                "(is the driver stuck?); run without --gpu")
    if done.returncode == 0 and "gpu ok" in done.stdout:
        return None
    cuda = None if "CPU-only" in done.stderr else _links_cuda(caffe_dir)
    if "CPU-only" in done.stderr or cuda is False:
        return (f"cannot use GPU {device}: this Caffe is a CPU-only build ({CPU_ONLY_ADVICE}); "
                "run without --gpu")
    detail = _last_line(done.stderr)
    if cuda:
        return (f"cannot use GPU {device}: the device does not exist or is not usable"
                + (f" ({detail})" if detail else "")
                + "; pick another id (nvidia-smi lists them) or run without --gpu")
    return (f"cannot use GPU {device}: this Caffe is a CPU-only build ({CPU_ONLY_ADVICE}) or "
            "the device does not exist" + (f" ({detail})" if detail else "")
            + "; run without --gpu")


def _links_cuda(caffe_dir):
    """True/False whether pycaffe's ``_caffe*.so`` links libcudart (per ``ldd``); None when
    that cannot be told."""
    ldd = shutil.which("ldd")
    libraries = [n for n in os.listdir(caffe_dir) if re.match(r"_caffe.*\.so$", n)]
    if ldd is None or not libraries:
        return None
    try:
        done = subprocess.run([ldd, os.path.join(caffe_dir, libraries[0])],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return "libcudart" in done.stdout


def _last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def use_device(gpu):
    """Put Caffe in CPU mode (``gpu`` None) or on GPU ``gpu`` after ``check_gpu``."""
    import caffe

    if gpu is None:
        caffe.set_mode_cpu()
        return
    check_gpu(gpu)
    caffe.set_device(int(gpu))
    caffe.set_mode_gpu()


# ----------------------------------------------------------------------------- the net

def load_net(prototxt, weights=None, gpu=None, phase="TEST", require_all=True):
    """A ``caffe.Net`` of ``prototxt`` in ``phase`` on the device ``gpu`` (None: CPU),
    with ``weights`` (a .caffemodel, or None to keep the initialisation) copied in.

    Everything checkable is checked before Caffe sees it: the prototxt (``check_prototxt``),
    the weights file, the device, and the weights' shapes layer by layer
    (``pixelfeedback.nets.weights.load_weights``; ``require_all``: every layer with
    parameters must be in the file).
    """
    import caffe

    if phase not in PHASES:
        raise ToolkitError(f"phase must be 'TEST' or 'TRAIN', got {phase!r}")
    prototxt = os.fspath(prototxt)
    check_prototxt(prototxt, phase=phase)
    if weights is not None:
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise ToolkitError(f"weights not found: {weights}; fetch published ones with "
                               "`python weights/fetch.py --list` or pass a trained caffemodel")
    use_device(gpu)
    net = caffe.Net(prototxt, getattr(caffe, phase))
    if weights is not None:
        load_weights(net, weights, require_all=require_all)
    return net


def prototxt_shapes(prototxt):
    """{layer name: [parameter shapes]} of every layer of a net ([] for a layer without
    parameters), from Caffe's own shape inference.

    The net is only constructed (parameters filled, no forward pass); activations are
    allocated lazily by Caffe, so even a 513x513 deploy net stays small.
    """
    import caffe

    check_prototxt(prototxt)
    net = caffe.Net(prototxt, caffe.TEST)
    return {name: [tuple(b.data.shape) for b in layer.blobs]
            for name, layer in zip(net._layer_names, net.layers)}


def shape_report(caffemodel, prototxt):
    """(mismatches, notes): layers Caffe would reject, and layers the file does not set
    (``weights.fit_report`` against ``prototxt_shapes``)."""
    mismatches, missing, _ = fit_report(caffemodel, prototxt_shapes(prototxt))
    return mismatches, [missing_note(name, caffemodel) for name in missing]
