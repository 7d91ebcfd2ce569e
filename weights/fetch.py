#!/usr/bin/env python
"""Download the published caffemodels of the model registry (tools/zoo.py) into weights/.

    python weights/fetch.py largefov [fcn8s ...]   fetch these models
    python weights/fetch.py --all                  fetch every model
    python weights/fetch.py --list                 what is known, what is present
    python weights/fetch.py --verify [names]       check files already here (no download)

Checksums of these files were never published, so the sha256 of the first download is
recorded in weights/checksums.json and every later download or --verify is checked
against it. After a download the caffemodel's parameter shapes are compared with the
model's deploy prototxt (Caffe would abort on a mismatch), naming each layer that differs.
"""
import argparse
import os
import sys

if __name__ == "__main__":  # quiet Caffe's glog unless the user asks for it
    os.environ.setdefault("GLOG_minloglevel", "2")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from python_layers import ToolkitError  # noqa: E402
from tools import download as dl  # noqa: E402
from tools import zoo  # noqa: E402

BASE_URL_ENV = "TOOLKIT_WEIGHTS_BASE_URL"
DEFAULT_DEST = os.path.join(REPO_ROOT, "weights")


def model_url(info, base_url=None):
    """The published URL, or the same file name under ``base_url`` (a mirror)."""
    if not base_url:
        return info.url
    return base_url.rstrip("/") + "/" + info.url.rstrip("/").rsplit("/", 1)[-1]


def caffemodel_shapes(path):
    """{layer name: [(shape, legacy)]} of a caffemodel, parsed without loading it in Caffe.

    Handles the current ``layer`` field and the V1 ``layers`` field of older files; a
    legacy blob (no ``shape``) gives its (num, channels, height, width) and legacy=True.
    """
    from tools import netdef

    model = netdef.read_caffemodel(path)
    return {layer.name: [blob_shape(b) for b in layer.blobs]
            for layer in list(model.layer) + list(model.layers) if layer.blobs}


def blob_shape(blob):
    """(shape tuple, legacy) of a BlobProto."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim), False
    return (int(blob.num), int(blob.channels), int(blob.height), int(blob.width)), True


def prototxt_shapes(prototxt):
    """{layer name: [parameter shapes]} of a net, from Caffe's own shape inference.

    The net is only constructed (parameters filled, no forward pass); activations are
    allocated lazily by Caffe, so even a 513x513 deploy net stays small.
    """
    import caffe

    if not os.path.isfile(prototxt):
        raise ToolkitError(f"deploy prototxt not found: {prototxt}; regenerate prototxt/ with "
                           "`make prototxt`")
    net = caffe.Net(prototxt, caffe.TEST)
    return {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}


def same_shape(model_shape, legacy, net_shape):
    """Caffe's Blob::ShapeEquals: a legacy blob matches when the net's shape, left-padded
    with 1s to 4-D, equals its (num, channels, height, width)."""
    net_shape = tuple(net_shape)
    if legacy:
        return len(net_shape) <= 4 and (1,) * (4 - len(net_shape)) + net_shape == model_shape
    return model_shape == net_shape


def shape_report(caffemodel, prototxt):
    """(mismatches, notes): layers Caffe would reject, and layers the file does not set."""
    model = caffemodel_shapes(caffemodel)
    net = prototxt_shapes(prototxt)
    mismatches, notes = [], []
    for name, net_blobs in net.items():
        if name not in model:
            notes.append(f"layer {name} has no weights in {os.path.basename(caffemodel)} "
                         "(it keeps its filler initialisation)")
            continue
        model_blobs = model[name]
        if len(model_blobs) != len(net_blobs):
            mismatches.append(f"layer {name}: {len(model_blobs)} blobs in the caffemodel, "
                              f"{len(net_blobs)} in the prototxt")
            continue
        for index, ((got, legacy), want) in enumerate(zip(model_blobs, net_blobs)):
            if not same_shape(got, legacy, want):
                mismatches.append(f"layer {name} blob {index}: caffemodel {got}, "
                                  f"prototxt {want}")
    return mismatches, notes


def check_shapes(name, path, deploy):
    """Print the shape report of one model; return False when Caffe would reject it."""
    if not os.path.isfile(deploy):
        print(f"{name}: no deploy prototxt at {os.path.relpath(deploy, REPO_ROOT)}; "
              "shapes not checked", file=sys.stderr)
        return True
    mismatches, notes = shape_report(path, deploy)
    for note in notes:
        print(f"{name}: note: {note}")
    for problem in mismatches:
        print(f"{name}: shape mismatch: {problem}", file=sys.stderr)
    if mismatches:
        return False
    print(f"{name}: parameter shapes fit {os.path.relpath(deploy, REPO_ROOT)}")
    return True


def fetch(name, dest=DEFAULT_DEST, base_url=None, force=False, progress=True, shapes=True):
    """Download (or find) the weights of model ``name``; returns True when all is well."""
    info = zoo.MODELS[name]
    path = os.path.join(dest, info.weights)
    record = os.path.join(dest, "checksums.json")
    if os.path.exists(path) and not force:
        verify_present(name, path, record, progress=progress)
    else:
        url = model_url(info, base_url)
        print(f"{name}: downloading {url}")
        result = dl.download(url, path, progress=progress, record=record,
                             member=info.archive_member)
        if result["recorded"]:
            print(f"{name}: recorded sha256 {result['sha256']} in {record} (first download)")
        else:
            print(f"{name}: sha256 verified against {record}")
    if info.trained_on:
        print(f"{name}: note: these weights were trained on {', '.join(info.trained_on)}; "
              "never report a mean IoU on those splits with them")
    return check_shapes(name, path, zoo.deploy_path(name)) if shapes else True


def verify_present(name, path, record, progress=True):
    """Check a file already in place against the recorded sha256 (recording it if new)."""
    known = dl.read_checksums(record).get(os.path.basename(path))
    if known and known.get("sha256"):
        dl.verify_file(path, sha256=known["sha256"], what=path, progress=progress,
                       hint=f"The file changed since its sha256 was recorded in {record}: "
                       f"fetch it again with `python weights/fetch.py {name} --force`")
        print(f"{name}: {path} present, sha256 verified")
    else:
        digest = dl.file_digest(path)
        dl.record_checksum(record, os.path.basename(path), digest, url=zoo.MODELS[name].url,
                           size=os.path.getsize(path))
        print(f"{name}: {path} present; no sha256 recorded yet, recorded {digest}")


def list_models(dest):
    record = dl.read_checksums(os.path.join(dest, "checksums.json"))
    for info in zoo.MODELS.values():
        path = os.path.join(dest, info.weights)
        state = "present" if os.path.exists(path) else "missing"
        checked = "sha256 recorded" if info.weights in record else "no sha256 yet"
        seen = f"; trained on {', '.join(info.trained_on)}" if info.trained_on else ""
        print(f"{info.name:22s} {info.weights:40s} {state:8s} {checked}{seen}")
        print(f"{'':22s} {info.description}")
        print(f"{'':22s} {info.url}")


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"models to fetch: {', '.join(zoo.MODELS)}")
    parser.add_argument("--all", action="store_true", help="fetch every model of the registry")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("--verify", action="store_true",
                        help="check files already present (sha256, shapes); download nothing")
    parser.add_argument("--force", action="store_true",
                        help="download again even when the file is present")
    parser.add_argument("--dest", default=DEFAULT_DEST,
                        help="folder for the caffemodels and checksums.json (default weights/)")
    parser.add_argument("--base-url", default=os.environ.get(BASE_URL_ENV),
                        help="mirror serving the same file names (default: the published "
                             f"hosts; also set by ${BASE_URL_ENV})")
    parser.add_argument("--no-shape-check", action="store_true",
                        help="skip comparing the caffemodel with the deploy prototxt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            list_models(args.dest)
            return 0
        names = list(zoo.MODELS) if args.all else args.names
        if not names:
            raise ToolkitError("name a model (see --list), or pass --all")
        unknown = [n for n in names if n not in zoo.MODELS]
        if unknown:
            raise ToolkitError(f"unknown model {', '.join(unknown)}; known: "
                               f"{', '.join(zoo.MODELS)}")
        all_fine = True
        for name in names:
            if args.verify:
                info = zoo.MODELS[name]
                path = os.path.join(args.dest, info.weights)
                if not os.path.exists(path):
                    raise ToolkitError(f"{path} is missing; fetch it with "
                                       f"`python weights/fetch.py {name}`")
                verify_present(name, path, os.path.join(args.dest, "checksums.json"),
                               progress=not args.no_progress)
                fine = args.no_shape_check or check_shapes(name, path, zoo.deploy_path(name))
            else:
                fine = fetch(name, dest=args.dest, base_url=args.base_url, force=args.force,
                             progress=not args.no_progress, shapes=not args.no_shape_check)
            all_fine &= fine
        if not all_fine:
            raise ToolkitError("some caffemodels do not fit their deploy prototxt (see the "
                               "shape mismatches above); Caffe would abort loading them")
        return 0
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
