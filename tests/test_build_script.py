"""docker/build_caffe.sh: the one Caffe recipe. Its clear errors, its caching, and the
Dockerfiles that must call it with the same pinned source."""
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
    assert re.search(r"^FROM nvidia/cuda:[\w.]+-devel", cuda, re.M)
    assert "--cuda" in cuda and "fetch /caffe-source" in cuda and "--source-dir" in cuda
    arch = re.search(r'--cuda-arch "([\d ]+)"', cuda).group(1).split()
    assert arch[0] == "70" and arch[-1] == "90"  # compute capability 7.0 to 9.0


def test_ci_runs_the_readme_test_command():
    ci = open(os.path.join(REPO, ".ci", "run")).read()
    readme = open(os.path.join(REPO, "README.md")).read()
    commands = [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]
    head = readme.split("\n## ", 1)[0]
    assert "make test" in head and "make demo" in head
