"""docker/build_caffe.sh: the one Caffe recipe. Its clear errors, its caching, its CUDA
options (toolkit pins, architectures per CUDA version, the loud failure when CMake finds
no CUDA), and the Dockerfiles that must call it with the same pinned source."""
import os
import re
import subprocess

import pytest

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, "docker", "build_caffe.sh")
ORIG = "caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
DEBIAN = "caffe_1.0.0+git20180821.99bd997-8.debian.tar.xz"


def run_script(*args, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True,
                          env=full_env, timeout=600, cwd=REPO)


def pinned(name):
    """The sha256 the script pins for a variable name."""
    text = open(SCRIPT).read()
    return re.search(r'^%s="([0-9a-f]{64})"' % name, text, re.M).group(1)


def test_pins_match_the_spec():
    assert pinned("CAFFE_ORIG_SHA256") == \
        "e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
    assert pinned("CAFFE_DEBIAN_SHA256") == \
        "07cf073227494a6b07234e40cb5df91db566616593eef9baafdc4d06ad159f21"


def test_checksum_mismatch_names_the_file_and_what_to_do(tmp_path):
    (tmp_path / ORIG).write_bytes(b"not the caffe source")
    (tmp_path / DEBIAN).write_bytes(b"not the debian patches")
    result = run_script("verify", str(tmp_path))
    assert result.returncode != 0
    assert "checksum mismatch for %s" % (tmp_path / ORIG) in result.stderr
    assert pinned("CAFFE_ORIG_SHA256") in result.stderr
    assert "delete it" in result.stderr and "fetch" in result.stderr


def test_missing_tarball_says_how_to_fetch(tmp_path):
    result = run_script("verify", str(tmp_path))
    assert result.returncode != 0
    assert "is missing" in result.stderr and "build_caffe.sh fetch" in result.stderr


def test_missing_apt_package_is_listed_with_the_install_command():
    result = run_script("deps", "--no-install",
                        env={"CAFFE_EXTRA_DEPS": "no-such-package-for-the-test"})
    assert result.returncode != 0
    assert "missing Debian packages: no-such-package-for-the-test" in result.stderr
    assert "apt-get install -y no-such-package-for-the-test" in result.stderr


@pytest.mark.parametrize("version, word", [("2.7", "too old"), ("3.7", "too old"),
                                           ("3.13", "too new"), ("3.14", "too new")])
def test_python_outside_the_supported_range_is_refused(tmp_path, version, word):
    fake = tmp_path / "python-fake"
    fake.write_text("#!/bin/sh\necho %s\n" % version)
    fake.chmod(0o755)
    result = run_script("--python", str(fake), "--venv", "none")
    assert result.returncode != 0
    assert "Python %s" % version in result.stderr and word in result.stderr
    assert "--python" in result.stderr  # says what to do


def test_unknown_option_and_command_are_errors():
    assert "unknown option '--frobnicate'" in run_script("--frobnicate").stderr
    assert "unknown command 'bake'" in run_script("bake").stderr


def test_second_run_reuses_everything():
    """make setup already ran (the test command depends on it): nothing is rebuilt."""
    result = run_script()
    assert result.returncode == 0, result.stderr
    assert "Caffe already built" in result.stdout
    assert "Python requirements present" in result.stdout
    assert "self-check passed" in result.stdout
    for word in ("configuring", "building with", "installing Debian packages"):
        assert word not in result.stdout


def test_dockerfiles_call_the_tested_recipe():
    for name in ("Dockerfile", "Dockerfile.cpu"):
        text = open(os.path.join(REPO, "docker", name)).read()
        assert "docker/build_caffe.sh" in text, name
        # no second recipe: no other source of Caffe, no cmake/make of its own
        assert "git clone" not in text and "cmake" not in text, name
        assert "sha256" not in text.lower(), name  # the pins live in the script only
        assert "docker/entrypoint.sh" in text
    cuda = open(os.path.join(REPO, "docker", "Dockerfile")).read()
    # The same path as `make test`'s compile check: CUDA 13 from the pinned wheels (no
    # --cuda-home, no CUDA base image), with the CUDA patches copied in.
    assert re.search(r"^FROM debian:bookworm", cuda, re.M)
    assert "COPY docker/patches docker/patches" in cuda
    builds = [line for line in cuda.replace("\\\n", " ").splitlines()
              if line.startswith("RUN ") and "bash docker/build_caffe.sh" in line]
    assert len(builds) == 2
    for line in builds:
        assert " --cuda " in line and "--cuda-home" not in line
        assert '--cuda-arch "$CUDA_ARCH"' in line   # the build argument picks them
    arch = re.search(r'^ARG CUDA_ARCH="([\d ]+)"', cuda, re.M).group(1).split()
    assert arch[0] == "75" and arch[-1] == "90"  # CUDA 13: compute capability 7.5 to 9.0
    assert "H100" in cuda and "driver 580" in cuda  # says which GPUs it serves


# --- CUDA options (no toolkit needed: the wheels' version is known from their pins) -----

def cuda_hash(*args):
    return run_script("recipe-hash", "--cuda", "--python", PYTHON, *args)


PYTHON = os.path.join(REPO, ".venv", "bin", "python")


def test_cuda_wheels_are_the_pinned_cuda_13_0_toolkit():
    text = open(SCRIPT).read()
    pins = dict(re.findall(r'^    "(nvidia-[\w-]+==[\d.]+) ([0-9a-f]{64})"$', text, re.M))
    assert sorted(pins) == sorted([
        "nvidia-cuda-nvcc==13.0.88", "nvidia-nvvm==13.0.88", "nvidia-cuda-crt==13.0.88",
        "nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cccl==13.0.85",
        "nvidia-curand==10.4.0.35", "nvidia-cublas==13.0.2.14"])
    assert "--require-hashes" in text and "--no-deps" in text


@pytest.mark.parametrize("arch, ok", [("70", False), ("75 90", True), ("90", True),
                                      ("121", True), ("130", False), ("9.0", False)])
def test_cuda_13_takes_compute_capability_7_5_to_12_1(arch, ok):
    result = cuda_hash("--cuda-arch", arch)
    assert (result.returncode == 0) == ok, result.stderr
    if not ok:
        assert "--cuda-arch" in result.stderr and arch.split()[0] in result.stderr


def fake_toolkit(tmp_path, release):
    """A folder whose bin/nvcc reports CUDA ``release`` (and holds nothing else)."""
    (tmp_path / "bin").mkdir(parents=True)
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release %s, V%s.0'\n"
                    % (release, release))
    nvcc.chmod(0o755)
    return str(tmp_path)


@pytest.mark.parametrize("release, arch, ok", [("12.4", "70", True), ("12.4", "100", False),
                                               ("11.8", "90", True), ("11.4", "89", False),
                                               ("13.0", "70", False)])
def test_architectures_follow_the_cuda_version(tmp_path, release, arch, ok):
    result = cuda_hash("--cuda-home", fake_toolkit(tmp_path, release), "--cuda-arch", arch)
    assert (result.returncode == 0) == ok, result.stderr
    if not ok:
        assert f"not supported by CUDA {release}" in result.stderr


def test_unsupported_or_missing_cuda_toolkit_is_named(tmp_path):
    result = cuda_hash("--cuda-home", fake_toolkit(tmp_path / "old", "10.2"))
    assert result.returncode != 0 and "CUDA 10.2 is not supported" in result.stderr
    result = cuda_hash("--cuda-home", str(tmp_path / "nowhere"))
    assert result.returncode != 0 and "no nvcc at" in result.stderr


def test_recipe_hash_names_the_cached_prefix_and_follows_the_options():
    sm90 = cuda_hash("--cuda-arch", "90", "--with-tests")
    assert sm90.returncode == 0 and re.fullmatch(r"[0-9a-f]{16}\n", sm90.stdout)
    assert cuda_hash("--cuda-arch", "90", "--with-tests").stdout == sm90.stdout  # stable
    assert cuda_hash("--cuda-arch", "89", "--with-tests").stdout != sm90.stdout
    prefix = run_script("prefix", "--cuda", "--cuda-arch", "90", "--with-tests", "--cached",
                        "--python", PYTHON, env={"PIXELFEEDBACK_CACHE": "/cache/here"})
    assert prefix.stdout.strip() == "/cache/here/caffe-cuda-sm90-" + sm90.stdout.strip()


def test_a_cpu_prefix_does_not_pass_as_a_cuda_build():
    """`check --cuda` of the CPU prefix: libcaffe.so links no libcudart, so it is refused."""
    result = run_script("check", "--cuda", "--prefix", os.path.join(REPO, "build", "caffe"),
                        "--python", PYTHON, "--venv", "none")
    assert result.returncode != 0
    assert "does not link libcudart: this is not a CUDA build" in result.stderr


def test_cmake_without_cuda_fails_loudly(tmp_path):
    """A toolkit CMake cannot use (here: an nvcc and nothing else) must not end in a CPU
    build recorded as a CUDA one."""
    sources = os.path.join(REPO, "build", "caffe-source")
    prefix = tmp_path / "prefix"
    result = run_script("build", "--cuda", "--cuda-home", fake_toolkit(tmp_path / "tk", "13.0"),
                        "--cuda-arch", "90", "--source-dir", sources, "--workdir",
                        str(tmp_path / "work"), "--prefix", str(prefix), "--python", PYTHON,
                        "--venv", "none")
    assert result.returncode != 0
    assert "CMake did not detect CUDA" in result.stderr
    assert not prefix.exists()  # nothing installed, no stamp


def test_ci_runs_the_readme_test_command():
    ci = open(os.path.join(REPO, ".ci", "run")).read()
    readme = open(os.path.join(REPO, "README.md")).read()
    commands = [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]
    head = readme.split("\n## ", 1)[0]
    assert "make test" in head and "make demo" in head



def test_make_test_needs_no_cuda_build_but_ci_goes_on_to_the_cuda_check():
    """A newcomer's `make test` runs the tests without the 25-minute CUDA compile; CI
    (CI=true, as .ci/run is run) goes on to `make cuda-check` after them."""
    def dry_run(ci):
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        if ci:
            env["CI"] = "true"
        return subprocess.run(["make", "-n", "--no-print-directory", "test"], cwd=REPO, env=env,
                              capture_output=True, text=True).stdout

    plain, ci = dry_run(False), dry_run(True)
    assert '-m pytest -m "not cuda_build"' in plain and "--cuda" not in plain
    assert "cuda-check" not in plain
    assert "make --no-print-directory cuda-check" in ci
    makefile = open(os.path.join(REPO, "Makefile")).read()
    assert re.search(r"^cuda-check: cuda-build gpu-bundle\n\t\$\(PY\) -m pytest -m cuda_build",
                     makefile, re.M)
