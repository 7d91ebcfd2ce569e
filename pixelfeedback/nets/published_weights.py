"""Published caffemodels of the registry: downloading them (resumable, sha256 recorded on
first download and verified after), and checking their shapes against the deploy nets
(weights/fetch.py is the command).
"""
import os
import sys

from pixelfeedback import download as dl
from pixelfeedback.nets import registry
from pixelfeedback.nets.loading import shape_report
from pixelfeedback.paths import REPO_ROOT, WEIGHTS_DIR
from python_layers import ToolkitError

BASE_URL_ENV = "TOOLKIT_WEIGHTS_BASE_URL"


def model_url(info, base_url=None):
    """The published URL, or the same file name under ``base_url`` (a mirror)."""
    if not base_url:
        return info.url
    return base_url.rstrip("/") + "/" + info.url.rstrip("/").rsplit("/", 1)[-1]


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


def fetch(name, dest=WEIGHTS_DIR, base_url=None, force=False, progress=True, shapes=True):
    """Download (or find) the weights of model ``name``; returns True when all is well."""
    info = registry.MODELS[name]
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
    return check_shapes(name, path, registry.deploy_path(name)) if shapes else True


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
        dl.record_checksum(record, os.path.basename(path), digest, url=registry.MODELS[name].url,
                           size=os.path.getsize(path))
        print(f"{name}: {path} present; no sha256 recorded yet, recorded {digest}")


def list_models(dest):
    record = dl.read_checksums(os.path.join(dest, "checksums.json"))
    for info in registry.MODELS.values():
        path = os.path.join(dest, info.weights)
        state = "present" if os.path.exists(path) else "missing"
        checked = "sha256 recorded" if info.weights in record else "no sha256 yet"
        seen = f"; trained on {', '.join(info.trained_on)}" if info.trained_on else ""
        print(f"{info.name:22s} {info.weights:40s} {state:8s} {checked}{seen}")
        print(f"{'':22s} {info.description}")
        print(f"{'':22s} {info.url}")


def fetch_models(names, fetch_all=False, list_only=False, verify=False, dest=WEIGHTS_DIR,
                 base_url=None, force=False, progress=True, shapes=True):
    """What weights/fetch.py does: list the models, verify files already present, or fetch
    the named ones (or all); a ToolkitError when a file does not fit its deploy net."""
    if list_only:
        list_models(dest)
        return
    names = list(registry.MODELS) if fetch_all else list(names)
    if not names:
        raise ToolkitError("name a model (see --list), or pass --all")
    unknown = [n for n in names if n not in registry.MODELS]
    if unknown:
        raise ToolkitError(f"unknown model {', '.join(unknown)}; known: "
                           f"{', '.join(registry.MODELS)}")
    all_fine = True
    for name in names:
        if verify:
            path = os.path.join(dest, registry.MODELS[name].weights)
            if not os.path.exists(path):
                raise ToolkitError(f"{path} is missing; fetch it with "
                                   f"`python weights/fetch.py {name}`")
            verify_present(name, path, os.path.join(dest, "checksums.json"), progress=progress)
            fine = not shapes or check_shapes(name, path, registry.deploy_path(name))
        else:
            fine = fetch(name, dest=dest, base_url=base_url, force=force, progress=progress,
                         shapes=shapes)
        all_fine &= fine
    if not all_fine:
        raise ToolkitError("some caffemodels do not fit their deploy prototxt (see the "
                           "shape mismatches above); Caffe would abort loading them")
