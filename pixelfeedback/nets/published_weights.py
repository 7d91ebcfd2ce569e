"""Published caffemodels of the registry: downloading them (resumable, sha256 recorded on
first download and verified after), checked before any sha256 is recorded: a whole
caffemodel of finite values whose shapes fit the deploy net (weights/fetch.py is the
command). ``--verify`` checks and never records; ``--replace-checksum`` replaces a
recorded sha256 by that of a new download that passes the checks.
"""
import os
import sys

from pixelfeedback import download as dl
from pixelfeedback.nets import largefov, registry
from pixelfeedback.nets.loading import prototxt_shapes
from pixelfeedback.nets.weights import fit_report, missing_note
from pixelfeedback.paths import REPO_ROOT, WEIGHTS_DIR
from python_layers import ToolkitError

BASE_URL_ENV = "TOOLKIT_WEIGHTS_BASE_URL"


def model_url(info, base_url=None):
    """The published URL, or the same file name under ``base_url`` (a mirror)."""
    if not base_url:
        return info.url
    return base_url.rstrip("/") + "/" + info.url.rstrip("/").rsplit("/", 1)[-1]


class WeightsMismatch(ToolkitError):
    """A caffemodel that does not fit its model's deploy net (the mismatches were printed)."""


def check_width_div(names, width_div):
    """``width_div`` other than 1 names LargeFOV's reduced-width nets: only the models whose
    deploy net is DeepLab-LargeFOV's have them."""
    if not isinstance(width_div, int) or width_div < 1 or 64 % width_div:
        raise ToolkitError(f"--width-div must divide 64 (1, 2, 4, ... 64), as the sweep's "
                           f"does, got {width_div!r}")
    others = [name for name in names if registry.MODELS[name].build_deploy
              is not largefov.deploy_net]
    if width_div != 1 and others:
        raise ToolkitError(f"--width-div {width_div} checks the shapes against DeepLab-LargeFOV "
                           f"with fewer channels; {', '.join(others)} is no LargeFOV model: "
                           "leave out --width-div for it")


def deploy_shapes(name, width_div=1):
    """(shapes, the net they come from) of model ``name``'s deploy net: its prototxt, or at
    ``width_div`` > 1 LargeFOV with every layer's channels divided by it (shapes only)."""
    if width_div == 1:
        deploy = registry.deploy_path(name)
        if not os.path.isfile(deploy):
            return None, os.path.relpath(deploy, REPO_ROOT)
        return prototxt_shapes(deploy), os.path.relpath(deploy, REPO_ROOT)
    import tempfile

    from pixelfeedback.nets.netspec import write_net
    with tempfile.TemporaryDirectory(prefix="fetch-shapes-") as tmp:
        path = write_net(largefov.deploy_net(width_div=width_div, size=65),
                         os.path.join(tmp, "deploy.prototxt"))
        return prototxt_shapes(path), f"DeepLab-LargeFOV at --width-div {width_div}"


def check_caffemodel(name, path, shapes=True, source=None, width_div=1):
    """Check that ``path`` is a whole caffemodel of finite values and, with ``shapes``, that
    it fits the deploy net of model ``name`` (at ``width_div``: ``deploy_shapes``; Caffe
    would abort on a mismatch); prints the report. Raises ToolkitError (``WeightsMismatch``
    for shapes) otherwise: only then may its checksum be recorded. ``source``: the URL
    ``path`` was downloaded from."""
    net_shapes, deploy = {}, None
    if shapes:
        net_shapes, deploy = deploy_shapes(name, width_div)
        if net_shapes is None:
            print(f"{name}: no deploy prototxt at {deploy}; shapes not checked",
                  file=sys.stderr)
            net_shapes = {}
    what = f"the download of {source}" if source else path
    try:
        mismatches, missing, non_finite = fit_report(path, net_shapes)
    except ToolkitError as exc:
        if not source:
            raise
        raise ToolkitError(f"{name}: {what} is no usable caffemodel, so it is neither kept nor "
                           f"recorded ({exc}); check the URL or the mirror") from None
    if non_finite:
        raise ToolkitError(f"{name}: {what}: {non_finite[0]}; these are not usable weights "
                           "(a corrupt file or mirror?): fetch them again")
    if not net_shapes:
        print(f"{name}: {registry.MODELS[name].weights} reads as a whole caffemodel")
        return
    for layer in missing:
        print(f"{name}: note: {missing_note(layer, registry.MODELS[name].weights)}")
    for problem in mismatches:
        print(f"{name}: shape mismatch: {problem}", file=sys.stderr)
    if mismatches:
        raise WeightsMismatch(f"{name}: {what} does not fit {deploy} (see above)")
    print(f"{name}: parameter shapes fit {deploy}")


def fetch(name, dest=WEIGHTS_DIR, base_url=None, force=False, progress=True, shapes=True,
          replace_checksum=False, width_div=1):
    """Download (or find) the weights of model ``name``, checked (``check_caffemodel``)
    before their sha256 is recorded or verified. ``replace_checksum``: download again and
    record the new file's sha256 in place of the recorded one."""
    info = registry.MODELS[name]
    path = os.path.join(dest, info.weights)
    record = os.path.join(dest, "checksums.json")
    if os.path.exists(path) and not force and not replace_checksum:
        verify_present(name, path, record, progress=progress, record_new=True, shapes=shapes,
                       width_div=width_div)
    else:
        url = model_url(info, base_url)
        before = dl.read_checksums(record).get(info.weights, {}).get("sha256")
        print(f"{name}: downloading {url}")
        result = dl.download(
            url, path, progress=progress, record=record, member=info.archive_member,
            check=lambda downloaded: check_caffemodel(name, downloaded, shapes, url, width_div),
            replace_record=replace_checksum,
            replace_advice=f"replace the recorded one with `python weights/fetch.py {name} "
                           "--replace-checksum`")
        if result["recorded"] and before:
            print(f"{name}: replaced the sha256 {before} recorded in {record} by "
                  f"{result['sha256']} (--replace-checksum)")
        elif result["recorded"]:
            print(f"{name}: recorded sha256 {result['sha256']} in {record} (first download)")
        else:
            print(f"{name}: sha256 verified against {record}")
    if info.trained_on:
        print(f"{name}: note: these weights were trained on {', '.join(info.trained_on)}; "
              "never report a mean IoU on those splits with them")


def verify_present(name, path, record, progress=True, record_new=False, shapes=True,
                   width_div=1):
    """Check a file already in place: its recorded sha256 and its content
    (``check_caffemodel``). Without a recorded sha256 it is recorded only with
    ``record_new`` (a fetch), never by --verify, and only once the content passed."""
    known = dl.read_checksums(record).get(os.path.basename(path))
    if known and known.get("sha256"):
        dl.verify_file(path, sha256=known["sha256"], what=path, progress=progress,
                       hint=f"The file changed since its sha256 was recorded in {record}: "
                       f"fetch it again with `python weights/fetch.py {name} --force`")
        print(f"{name}: {path} present, sha256 verified")
        check_caffemodel(name, path, shapes, width_div=width_div)
        return
    try:
        check_caffemodel(name, path, shapes, width_div=width_div)
    except ToolkitError as exc:
        raise type(exc)(f"{exc}; {path} is not the model's file, so no sha256 is recorded: "
                        f"delete it, or fetch it again with `python weights/fetch.py {name} "
                        "--force`") from None
    if not record_new:
        print(f"{name}: {path} present; no sha256 recorded yet (--verify records none: "
              f"`python weights/fetch.py {name}` does, for a file that passed these checks)")
        return
    digest = dl.file_digest(path, progress=progress)
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
                 base_url=None, force=False, progress=True, shapes=True,
                 replace_checksum=False, width_div=1):
    """What weights/fetch.py does: list the models, verify files already present, or fetch
    the named ones (or all); a ToolkitError when a file does not fit its deploy net (at
    ``width_div``, LargeFOV's reduced-width nets: ``deploy_shapes``). A flag that would do
    nothing beside the others given is refused, naming both."""
    modes = [flag for flag, given in (("--list", list_only), ("--verify", verify)) if given]
    downloads = [flag for flag, given in (("--force", force),
                                          ("--replace-checksum", replace_checksum)) if given]
    if len(modes) > 1 or (modes and downloads):
        other = (modes + downloads)[1]
        raise ToolkitError(f"{modes[0]} downloads nothing, so {other} would do nothing with "
                           "it; give one of them")
    if list_only and (names or fetch_all):
        raise ToolkitError("--list lists every model; it takes no model names or --all")
    if list_only:
        list_models(dest)
        return
    if fetch_all and names:
        raise ToolkitError(f"--all fetches every model; drop the names ({' '.join(names)}) or "
                           "--all")
    names = list(registry.MODELS) if fetch_all else list(names)
    if not names:
        raise ToolkitError("name a model (see --list), or pass --all")
    unknown = [n for n in names if n not in registry.MODELS]
    if unknown:
        raise ToolkitError(f"unknown model {', '.join(unknown)}; known: "
                           f"{', '.join(registry.MODELS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ToolkitError(f"model {repeated[0]} is named twice; name each model once")
    check_width_div(names, width_div)
    mismatched = []
    for name in names:
        try:
            if verify:
                path = os.path.join(dest, registry.MODELS[name].weights)
                if not os.path.exists(path):
                    raise ToolkitError(f"{path} is missing; fetch it with "
                                       f"`python weights/fetch.py {name}`")
                verify_present(name, path, os.path.join(dest, "checksums.json"),
                               progress=progress, shapes=shapes, width_div=width_div)
            else:
                fetch(name, dest=dest, base_url=base_url, force=force, progress=progress,
                      shapes=shapes, replace_checksum=replace_checksum, width_div=width_div)
        except WeightsMismatch:
            mismatched.append(name)
    if mismatched:
        raise ToolkitError(f"the caffemodel of {', '.join(mismatched)} does not fit its "
                           "deploy prototxt (see the shape mismatches above); Caffe would "
                           "abort loading it, so its sha256 was not recorded")
