"""Static checks of the Docker files (make docker-check builds and runs the images; these
run in seconds): the build context keeps every tracked file, the secrets of the pip step
leave nothing in an image, the CUDA architectures are a build argument, and the entrypoint
of the CUDA image says in one line when it runs without a GPU."""
import os
import re
import stat
import subprocess

import pytest

from tests.conftest import REPO  # noqa: E402
DOCKER = os.path.join(REPO, "docker")


def dockerignore_patterns():
    patterns = []
    with open(os.path.join(REPO, ".dockerignore")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                negate = line.startswith("!")
                pattern = line[1:] if negate else line
                patterns.append((negate, pattern.strip("/")))
    return patterns


def _regex(pattern):
    """Docker's pattern syntax (Go filepath.Match plus **) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def excluded(path, patterns):
    """Whether Docker leaves ``path`` out of the context: the last pattern matching the path
    or one of its parent folders decides (! keeps)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    result = False
    for negate, pattern in patterns:
        regex = _regex(pattern)
        if any(regex.match(p) for p in prefixes):
            result = not negate
    return result


def tracked_files():
    """The repository's tracked files (git), or, where there is no .git (inside an image),
    the files present outside the git-ignored folders."""
    if os.path.isdir(os.path.join(REPO, ".git")):
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
        return out.split()
    skip = {".venv", "build", "runs", "data", "__pycache__", ".pytest_cache"}
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in skip]
        found += [os.path.relpath(os.path.join(root, f), REPO) for f in files
                  if not f.endswith(".pyc")]
    return found


def test_dockerignore_matcher_follows_dockers_rules():
    patterns = dockerignore_patterns()
    for path in (".venv/bin/python", "build/caffe/bin/caffe", "runs/demo/report.md",
                 "data/lists/train.txt", "weights/train2_iter_8000.caffemodel",
                 "weights/snapshots/run_iter_4.caffemodel", "pixelfeedback/__pycache__/x.pyc",
                 "__pycache__/y.pyc", ".git/HEAD"):
        assert excluded(path, patterns), path
    for path in ("weights/demo/largefov_synthetic.caffemodel", "weights/snapshots/.gitignore",
                 "tests/pixelfeedback/nets/test_largefov.py", "docker/entrypoint.sh", ".gitignore", "Makefile"):
        assert not excluded(path, patterns), path


def test_build_context_keeps_every_tracked_file():
    patterns = dockerignore_patterns()
    files = tracked_files()
    assert "weights/snapshots/.gitignore" in files  # tests/pixelfeedback/nets/test_largefov.py needs it
    left_out = [f for f in files if excluded(f, patterns)]
    assert not left_out, f"tracked files .dockerignore leaves out of the images: {left_out}"


def _joined(name):
    with open(os.path.join(DOCKER, name)) as f:
        return f.read().replace("\\\n", " ")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_pip_secrets_are_optional_and_leave_nothing_in_the_image(name):
    text = _joined(name)
    runs = [line for line in text.splitlines() if line.startswith("RUN ")]
    pip_steps = [line for line in runs if "--mount=type=secret" in line]
    assert len(pip_steps) == 1, "one RUN installs the Python requirements"
    step = pip_steps[0]
    for secret in ("pip_cert", "pip_conf"):
        assert f"--mount=type=secret,id={secret} " in step  # optional: plain docker builds
        assert "required" not in step
    # pip reads them only inside that RUN, and only when given
    assert "[ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert" in step
    assert "[ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf" in step
    assert "docker/build_caffe.sh" in step and "/root/.cache/pip" in step
    assert not re.search(r"^(ENV|ARG)\b.*PIP_", text, re.M)
    assert not re.search(r"^(COPY|ADD)\b.*(pip\.conf|\.crt|\.pem)", text, re.M)
    assert "type=bind" not in text  # a bind mount leaves an empty mount point behind


def test_cuda_architectures_are_a_build_argument():
    text = _joined("Dockerfile")
    default = re.search(r'^ARG CUDA_ARCH="([\d ]+)"$', text, re.M).group(1).split()
    assert default[0] == "75" and default[-1] == "90"  # CUDA 13: compute capability 7.5 to 9.0
    builds = [line for line in text.splitlines() if "bash docker/build_caffe.sh" in line]
    assert len(builds) == 2
    for line in builds:
        assert ' --cuda --cuda-arch "$CUDA_ARCH" ' in line and "--cuda-home" not in line
    assert re.search(r"^ENV PIXELFEEDBACK_CUDA_IMAGE=1$", text, re.M)
    assert "PIXELFEEDBACK_CUDA_IMAGE" not in _joined("Dockerfile.cpu")


@pytest.mark.parametrize("script", ["docker_check.sh", "entrypoint.sh"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", os.path.join(DOCKER, script)], check=True)


def test_entrypoint_runs_the_tests_without_the_cuda_build_ones():
    with open(os.path.join(DOCKER, "entrypoint.sh")) as f:
        text = f.read()
    assert 'test)      exec python -m pytest -m "not cuda_build" "$@"' in text
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        assert '"cuda_build:' in f.read()


NO_GPU_LINE = ("no GPU visible: running on the CPU (start the container with 'docker run "
               "--gpus all' for the GPU)")


def run_entrypoint(tmp_path, args, cuda_image=True, nvidia_smi=None, python=False):
    """docker/entrypoint.sh outside an image: a stand-in workspace with an empty venv, the
    mount points /data, /weights and /runs in ``tmp_path/mounts``, and ``nvidia_smi``
    (shell code) as the only nvidia-smi on PATH (None: none). ``python``: a stand-in
    python on PATH that prints the command it was given, one line per call."""
    workspace = tmp_path / "workspace"
    (workspace / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
    (workspace / ".venv" / "bin" / "activate").write_text("")
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, body in (("nvidia-smi", nvidia_smi), ("python", 'echo "python $*"' if python else None)):
        if body is not None:
            stub = stubs / name
            stub.write_text("#!/bin/sh\n" + body + "\n")
            stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    mounts = tmp_path / "mounts"
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "PIXELFEEDBACK_WORKSPACE": str(workspace),
           **{f"PIXELFEEDBACK_{name.upper()}": str(mounts / name)
              for name in ("data", "weights", "runs")}}
    if cuda_image:
        env["PIXELFEEDBACK_CUDA_IMAGE"] = "1"
    return subprocess.run(["bash", os.path.join(DOCKER, "entrypoint.sh")] + args, env=env,
                          capture_output=True, text=True, timeout=30)


SHOW = ["bash", "-c", 'echo "ran GLOG=${GLOG_minloglevel:-unset}"']


@pytest.mark.parametrize("nvidia_smi", [
    None,                                                   # no --gpus: no nvidia-smi at all
    'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver"; '
    "exit 9",                                               # a driver that does not answer
    "exit 0",                                               # lists no GPU
], ids=["no nvidia-smi", "driver fails", "no GPU listed"])
def test_cuda_image_without_a_gpu_says_so_in_one_line(tmp_path, nvidia_smi):
    result = run_entrypoint(tmp_path, SHOW, nvidia_smi=nvidia_smi)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [NO_GPU_LINE]
    assert result.stdout == "ran GLOG=3\n"  # Caffe's "Cannot create Cublas handle" silenced


def test_cuda_image_without_a_gpu_refuses_gpu_flags(tmp_path):
    for flag in (["--gpu", "0"], ["--gpu=0"], ["--gpus", "0,1"], ["--gpus=0"]):
        result = run_entrypoint(tmp_path, ["python", "tools/reproduce_table.py"] + flag)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: {flag[0].split('=')[0]}") or \
            result.stderr.startswith(f"error: {flag[0]} given")
        assert "no GPU is visible in this container" in result.stderr
        assert "docker run --gpus all" in result.stderr


def test_gpu_or_cpu_image_prints_nothing(tmp_path):
    listed = 'echo "GPU 0: NVIDIA H200 (UUID: GPU-0123)"'
    result = run_entrypoint(tmp_path, SHOW, nvidia_smi=listed)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "ran GLOG=unset\n")
    result = run_entrypoint(tmp_path, SHOW, cuda_image=False)  # the CPU image: as before
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "ran GLOG=unset\n")
    result = run_entrypoint(tmp_path, ["help"], nvidia_smi=None)
    assert result.returncode == 0 and result.stderr == "" and "reproduce [ARGS]" in result.stdout


def _check_script(tmp_path, body):
    """Run ``body`` in bash with docker/docker_check.sh sourced (its functions only; its
    folder in ``tmp_path``)."""
    env = dict(os.environ, DOCKER_CHECK_DIR=str(tmp_path / "check"))
    return subprocess.run(["bash", "-c", f'source "{DOCKER}/docker_check.sh"\n{body}'],
                          capture_output=True, text=True, timeout=30, env=env)


def test_check_script_names_the_reason_of_a_failed_step(tmp_path):
    log = tmp_path / "cpu-test.log"
    log.write_text("........F...\nFAILED tests/test_x.py::test_y - assert 1 == 2\n"
                   "1 failed, 603 passed in 300.00s\n\n")
    result = _check_script(tmp_path, f'reason_of "{log}"')
    assert result.stdout == f"1 failed, 603 passed in 300.00s (log: {log})"
    log.write_text("Successfully tagged x\nall went well\n")
    assert _check_script(tmp_path, f'reason_of "{log}"').stdout == f"all went well (log: {log})"
    result = _check_script(tmp_path, 'fail build-cpu "pip: CERTIFICATE_VERIFY_FAILED"')
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == \
        "docker-check: FAIL: build-cpu: pip: CERTIFICATE_VERIFY_FAILED"
    assert _check_script(tmp_path, "DEBIAN_MIRROR=http://mirror.example/debian/ debian_mirror").stdout \
        == "http://mirror.example/debian\n"


def test_check_script_counts_a_removed_package_as_missing(tmp_path):
    """A package removed but not purged (its configuration left) must be installed again:
    `dpkg -s` answers for it, so podman "was installed" and the check stopped on a
    machine where it had been removed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dpkg-query"
    fake.write_text('#!/bin/sh\n'
                    'for p; do :; done\n'
                    'case $p in\n'
                    '  runc) printf "install ok installed" ;;\n'
                    '  podman) printf "deinstall ok config-files" ;;\n'
                    '  *) echo "dpkg-query: no packages found matching $p" >&2; exit 1 ;;\n'
                    'esac\n')
    fake.chmod(0o755)
    result = _check_script(tmp_path, f'PATH="{bin_dir}:$PATH" missing_packages podman runc mmdebstrap')
    assert (result.returncode, result.stdout) == (0, "podman\nmmdebstrap\n")


def test_check_script_keeps_one_log_per_package_install(tmp_path):
    """Installing podman, then mmdebstrap, leaves both logs (they once shared one name)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in [("dpkg-query", "exit 1"), ("id", "echo 0"),
                       ("apt-get", 'echo "apt-get $*"')]:
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    result = _check_script(tmp_path, f'PATH="{bin_dir}:$PATH"; is_debian_like() {{ true; }}\n'
                           'apt_install podman runc && apt_install mmdebstrap')
    assert result.returncode == 0, result.stdout + result.stderr
    logs = tmp_path / "check" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["apt-install-mmdebstrap.log",
                                                      "apt-install-podman.log"]
    assert "install -y -qq podman runc" in (logs / "apt-install-podman.log").read_text()


FOUR_GPUS = "; ".join(f'echo "GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i}{i}{i})"' for i in range(4))


def python_calls(result):
    """The command lines the stand-in python was given."""
    assert result.returncode == 0, result.stderr
    return [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("python ")]


def voc_mounted(tmp_path):
    (tmp_path / "mounts" / "data" / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    return str(tmp_path / "mounts" / "data" / "VOCdevkit" / "VOC2012")


@pytest.mark.parametrize("given, passed", [
    ([], ["--gpu", "0"]),                                   # one GPU by default
    (["--gpus", "0,1,2,3"], ["--gpus", "0,1,2,3"]),          # issue 26 item 3: passed through
    (["--gpus", "1,3"], ["--gpus", "1,3"]),
    (["--gpu", "2"], ["--gpu", "2"]),
    (["--gpu=2"], ["--gpu=2"]),
    (["--gpus", "all"], ["--gpus", "0,1,2,3"]),              # every GPU nvidia-smi -L lists
    (["--gpus=all"], ["--gpus", "0,1,2,3"]),
], ids=["none", "gpus list", "gpus subset", "gpu", "gpu=", "gpus all", "gpus=all"])
def test_reproduce_passes_gpu_flags_through_and_adds_gpu_0_only_without_them(
        tmp_path, given, passed):
    voc = voc_mounted(tmp_path)
    result = run_entrypoint(tmp_path, ["reproduce", "--seeds", "0"] + given,
                            nvidia_smi=FOUR_GPUS, python=True)
    lists, sweep = python_calls(result)
    assert lists == ["tools/fetch_voc.py", "--lists-only", voc, "--lists-dir",
                     str(tmp_path / "mounts" / "data" / "lists")]
    assert sweep == ["tools/reproduce_table.py", "--data-root", voc, "--seeds", "0"] + passed \
        or sweep == ["tools/reproduce_table.py", "--data-root", voc] + passed + ["--seeds", "0"]
    assert sweep.count("--gpu") + sweep.count("--gpus") + \
        sum(arg.startswith("--gpu") and "=" in arg for arg in sweep) == 1


def test_gpus_all_without_a_visible_gpu_is_refused(tmp_path):
    voc_mounted(tmp_path)
    for cuda_image in (True, False):
        result = run_entrypoint(tmp_path, ["reproduce", "--gpus", "all"],
                                cuda_image=cuda_image, python=True)
        assert result.returncode == 2 and "python" not in result.stdout
        assert "no GPU is visible in this container" in result.stderr


def test_gpu_check_runs_on_gpu_0_or_says_cpu(tmp_path):
    runs = str(tmp_path / "mounts" / "runs")
    [call] = python_calls(run_entrypoint(tmp_path, ["gpu-check"], nvidia_smi=FOUR_GPUS,
                                         python=True))
    assert call == ["tools/gpu_check.py", "--out", runs + "/gpu-check", "--gpu", "0"]
    [call] = python_calls(run_entrypoint(tmp_path, ["gpu-check", "--gpu", "3"],
                                         nvidia_smi=FOUR_GPUS, python=True))
    assert call == ["tools/gpu_check.py", "--out", runs + "/gpu-check", "--gpu", "3"]
    cpu = tmp_path / "cpu"   # no nvidia-smi there
    [call] = python_calls(run_entrypoint(cpu, ["gpu-check", "--iterations", "5"],
                                         cuda_image=False, python=True))
    assert call == ["tools/gpu_check.py", "--out", str(cpu / "mounts" / "runs" / "gpu-check"), "--cpu",
                    "--iterations", "5"]


def test_fetch_commands_write_into_the_mounts(tmp_path):
    data, weights = (str(tmp_path / "mounts" / name) for name in ("data", "weights"))
    [call] = python_calls(run_entrypoint(tmp_path, ["fetch-data"], python=True))
    assert call == ["tools/fetch_voc.py", "--sbd", "--dest", data]
    [call] = python_calls(run_entrypoint(tmp_path, ["fetch-weights"], python=True))
    assert call == ["weights/fetch.py", "--dest", weights, "largefov-init"]
    [call] = python_calls(run_entrypoint(tmp_path, ["fetch-weights", "largefov-init",
                                                    "largefov"], python=True))
    assert call == ["weights/fetch.py", "--dest", weights, "largefov-init", "largefov"]
    [call] = python_calls(run_entrypoint(tmp_path, ["fetch-weights", "--base-url", "http://m",
                                                    "--width-div", "32"], python=True))
    assert call == ["weights/fetch.py", "--dest", weights, "largefov-init", "--base-url",
                    "http://m", "--width-div", "32"]


def test_the_tools_default_folders_are_the_mounts(tmp_path):
    """data/ and runs/ of the workspace are the mounted folders (results outlive --rm);
    each caffemodel of the mounted weights folder is linked into weights/."""
    mounts = tmp_path / "mounts"
    (mounts / "weights").mkdir(parents=True)
    (mounts / "weights" / "vgg16_20M.caffemodel").write_bytes(b"w")
    (mounts / "weights" / "notes.txt").write_text("not a model")
    voc_mounted(tmp_path)
    python_calls(run_entrypoint(tmp_path, ["reproduce"], python=True))
    workspace = tmp_path / "workspace"
    assert os.readlink(workspace / "data") == str(mounts / "data")
    assert os.readlink(workspace / "runs") == str(mounts / "runs")
    assert os.readlink(workspace / "weights" / "vgg16_20M.caffemodel") == \
        str(mounts / "weights" / "vgg16_20M.caffemodel")
    assert sorted(os.listdir(workspace / "weights")) == ["vgg16_20M.caffemodel"]
    result = run_entrypoint(tmp_path, ["reproduce"], python=True)   # again: links kept
    assert result.returncode == 0, result.stderr


def test_reproduce_without_voc_says_how_to_mount_it(tmp_path):
    result = run_entrypoint(tmp_path, ["reproduce"], python=True)
    assert result.returncode == 2 and result.stdout == ""
    assert "run fetch-data first" in result.stderr and "-v" in result.stderr
