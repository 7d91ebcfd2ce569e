"""docker/slurm_table31.sh runs unchanged on GPU and CPU nodes: the device flag comes from
GPUS (default 0; empty: none), the paths from the environment, flags after the script go to
the sweep and override its own. docker/slurm_check.sh (`make slurm-check`) submits that very
script as its header says. Both are run here without Slurm: the Slurm script with a stub
`python` that records its arguments; the real Slurm run is `make slurm-check`."""
import os
import re
import shlex
import subprocess

import pytest

from tests.conftest import REPO, load_script

SLURM_SCRIPT = os.path.join(REPO, "docker", "slurm_table31.sh")
CHECK_SCRIPT = os.path.join(REPO, "docker", "slurm_check.sh")


@pytest.mark.parametrize("script", [SLURM_SCRIPT, CHECK_SCRIPT])
def test_scripts_parse(script):
    done = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def run_task(tmp_path, extra=(), **env_changes):
    """One array task (3 of 4) of the Slurm script in a fake clone whose .venv puts a stub
    `python` first on PATH; returns (the stub's argv, its working directory, stdout)."""
    repo = tmp_path / "clone"
    (repo / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
    stub_bin = tmp_path / "stub_bin"
    stub_bin.mkdir(exist_ok=True)
    record = tmp_path / "argv.txt"
    stub = stub_bin / "python"
    stub.write_text(f'#!/bin/sh\npwd > "{record}.cwd"\nprintf "%s\\n" "$@" > "{record}"\n')
    stub.chmod(0o755)
    (repo / ".venv" / "bin" / "activate").write_text(f'PATH="{stub_bin}:$PATH"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "VOC", "TRAIN_LIST",
                                                             "VAL_LIST", "INIT_WEIGHTS")}
    env.update(SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="4", REPO=str(repo),
               SHARED="/shared/t31", HOME=str(tmp_path / "home"))
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    done = subprocess.run(["bash", SLURM_SCRIPT, *extra], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    argv = record.read_text().splitlines()
    return argv, open(f"{record}.cwd").read().strip(), done.stdout


def sweep_args(argv):
    assert argv[0] == "tools/reproduce_table.py"
    return load_script("tools/reproduce_table.py").build_parser().parse_args(argv[1:])


def test_gpu_default_is_device_0_with_the_shard_of_the_task(tmp_path):
    argv, cwd, stdout = run_task(tmp_path)
    assert cwd == str(tmp_path / "clone")
    assert argv.count("--gpus") == 1 and argv[argv.index("--gpus") + 1] == "0"
    args = sweep_args(argv)
    assert tuple(args.shard) == (3, 4) and list(args.gpus) == [0] and args.gpu is None
    assert args.out == "/shared/t31"
    home = str(tmp_path / "home")
    assert args.data_root == home + "/data/VOCdevkit/VOC2012"
    assert (args.train_list, args.val_list, args.init_weights) == (
        "data/lists/train.txt", "data/lists/val.txt", "weights/train2_iter_8000.caffemodel")
    assert "table31 task 3/4" in stdout and "--gpus 0" in stdout


def test_empty_gpus_runs_on_the_cpu_without_any_device_flag(tmp_path):
    argv, _, stdout = run_task(tmp_path, GPUS="")
    assert not [arg for arg in argv if arg.startswith("--gpu")]
    args = sweep_args(argv)
    assert args.gpus is None and args.gpu is None and tuple(args.shard) == (3, 4)
    assert "table31 task 3/4" in stdout and ": CPU," in stdout


def test_gpus_list_paths_from_the_environment_and_flags_after_the_script(tmp_path):
    argv, _, _ = run_task(
        tmp_path, extra=("--seeds", "0,1", "--init-weights", "/w/other.caffemodel"),
        GPUS="1,2", VOC="/data/VOC", TRAIN_LIST="/l/train.txt", VAL_LIST="/l/val.txt",
        INIT_WEIGHTS="/w/init.caffemodel")
    args = sweep_args(argv)
    assert list(args.gpus) == [1, 2]
    assert (args.data_root, args.train_list, args.val_list) == (
        "/data/VOC", "/l/train.txt", "/l/val.txt")
    assert args.init_weights == "/w/other.caffemodel"  # the flag after the script wins
    assert list(args.seeds) == [0, 1]


def test_header_documents_cpu_nodes_and_the_requests_to_adapt():
    text = open(SLURM_SCRIPT).read()
    header = text.split("\nset -euo pipefail", 1)[0]
    assert re.search(r"^#SBATCH --array=1-4$", header, re.M)
    assert re.search(r"^#SBATCH --gres=gpu:1$", header, re.M)
    # The CPU command line of the header: GPUS empty and --gres=none (sbatch refuses
    # gres=gpu on a cluster without GPUs), which is what the check submits with.
    cpu_line = next(line for line in header.splitlines() if "GPUS= sbatch" in line)
    assert "--gres=none" in cpu_line
    assert "--table-only" in header and "make slurm-check" in header


def test_the_check_submits_the_repository_script_as_its_header_says():
    text = open(CHECK_SCRIPT).read()
    assert 'SCRIPT=$REPO/docker/slurm_table31.sh' in text
    submit = text[text.index("JOB=$(cd"):].split(")", 1)[0].replace("\\\n", " ")
    words = shlex.split(submit.replace("$(", ""), posix=True)
    assert "GPUS=" in words and "--gres=none" in words
    assert '"$SCRIPT"' in submit and '"${SWEEP[@]}"' in submit
    # Daemons and jobs are stopped when it ends, also when interrupted.
    assert re.search(r"^trap finish EXIT$", text, re.M) and "\n    stop_all\n" in text
    assert re.search(r"^trap .* INT TERM$", text, re.M)
    assert "--table-only" in text


def test_make_slurm_check_runs_the_check_script():
    makefile = open(os.path.join(REPO, "Makefile")).read()
    assert re.search(r"^slurm-check:.*\n\tbash docker/slurm_check\.sh", makefile, re.M)
    assert re.search(r"^\.PHONY:.*\bslurm-check\b", makefile, re.M)
