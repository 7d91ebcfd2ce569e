"""The shared entry wrapper (pixelfeedback.cli): user-fixable errors become `error: ...` and
exit 2 without a traceback, Ctrl-C exits 130, setup happens at call time; the shared flags
validate their values."""
import argparse
import errno
import os
import subprocess
import sys

import pytest

from pixelfeedback import cli
from python_layers import ToolkitError


def tool(command, out_default=None):
    """A tiny tool: a parser with --out (and the shared flags) and ``command``."""
    parser = argparse.ArgumentParser(prog="tiny")
    cli.add_out(parser, out_default, "where the result goes")
    cli.add_gpu(parser)
    cli.add_mean(parser, "the DeepLab mean")
    cli.add_size(parser, 0, "pad to N x N")

    def main(argv=None):
        return cli.main(parser, command, argv)
    return main


def write_summary(args):
    """A command that writes a file under --out, as the real tools do."""
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        f.write("{}")


def assert_clean_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ----------------------------------------------------------------------------- the wrapper

def test_success_returns_zero_or_the_commands_status():
    seen = {}
    assert tool(lambda args: seen.update(vars(args)))(["--out", "x", "--gpu", "1"]) == 0
    assert seen == {"out": "x", "gpu": 1, "mean": None, "size": 0}
    assert tool(lambda args: 3)([]) == 3


def test_toolkit_error_is_exit_2_without_traceback(capsys):
    def fail(args):
        raise ToolkitError("list file not found: data/x.txt; pass --list")
    assert tool(fail)([]) == 2
    assert capsys.readouterr().err == "error: list file not found: data/x.txt; pass --list\n"


def test_other_exceptions_are_not_swallowed():
    def bug(args):
        raise ValueError("a bug")
    with pytest.raises(ValueError):
        tool(bug)([])


def test_usage_errors_and_help_return_argparse_status(capsys):
    assert tool(lambda args: None)(["--size", "abc"]) == 2
    assert "argument --size: must be an integer >= 0, got 'abc'" in capsys.readouterr().err
    assert tool(lambda args: None)(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "run Caffe on GPU ID (default: CPU)" in help_text
    assert "B,G,R" in help_text


def test_read_only_folder_names_the_path(tmp_path, capsys):
    folder = tmp_path / "runs"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        writable = os.access(folder, os.W_OK)   # root writes anyway
        status = tool(write_summary)(["--out", str(folder)])
    finally:
        folder.chmod(0o755)
    if writable:
        assert status == 0
    else:
        assert status == 2
        assert_clean_error(capsys, str(folder / "summary.json"), "choose another --out")


def test_output_under_a_regular_file_is_enotdir(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("a file, not a folder")
    assert tool(write_summary)(["--out", str(blocker)]) == 2
    err = assert_clean_error(capsys, str(blocker / "summary.json"), "choose another --out")
    assert "Not a directory" in err


def test_output_path_that_is_a_folder_is_eisdir(tmp_path, capsys):
    def write_file(args):
        with open(args.out, "w") as f:
            f.write("x")
    assert tool(write_file)(["--out", str(tmp_path)]) == 2
    assert_clean_error(capsys, str(tmp_path), "Is a directory", "give the path of a file")


def test_missing_folder_is_enoent(tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    assert tool(write_summary)(["--out", str(missing)]) == 2
    assert_clean_error(capsys, str(missing / "summary.json"), "check the path")


def test_existing_folder_is_eexist(tmp_path, capsys):
    assert tool(lambda args: os.mkdir(args.out))(["--out", str(tmp_path)]) == 2
    assert_clean_error(capsys, str(tmp_path), "remove it or choose another --out")


@pytest.mark.parametrize("code, fragment", [
    (errno.ENOSPC, "free some space or choose another --out"),
    (errno.EROFS, "Read-only file system; choose another --out"),
    (errno.EACCES, "check its permissions"),
])
def test_full_and_read_only_disks_name_the_path(code, fragment, capsys):
    path = "runs/x/summary.json"

    def fail(args):
        raise OSError(code, os.strerror(code), path)
    assert tool(fail)([]) == 2
    err = assert_clean_error(capsys, "error: cannot ", path, fragment)
    assert err.count("\n") == 1


def test_advice_without_an_out_flag_says_another_location(capsys):
    parser = argparse.ArgumentParser(prog="tiny")

    def fail(args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/a.png")
    assert cli.main(parser, fail, []) == 2
    assert_clean_error(capsys, "/mnt/ro/a.png", "choose another location")


def test_os_error_without_a_path_still_has_no_traceback(capsys):
    def fail(args):
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert tool(fail)([]) == 2
    assert capsys.readouterr().err == "error: Connection reset by peer\n"


def test_keyboard_interrupt_is_130_and_says_work_is_kept(capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    assert tool(interrupted)([]) == 130
    err = capsys.readouterr().err
    assert "interrupted:" in err and "run the same command again" in err
    assert "Traceback" not in err


def test_glog_level_is_set_at_call_time_unless_the_user_set_it(monkeypatch):
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    seen = []
    run = tool(lambda args: seen.append(os.environ.get("GLOG_minloglevel")))
    assert run([]) == 0
    monkeypatch.setenv("GLOG_minloglevel", "0")
    assert run([]) == 0
    assert seen == ["2", "0"]


def test_importing_the_wrapper_changes_no_process_state(repo_root):
    env = {k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"}
    code = ("import os, sys; env = dict(os.environ); path = list(sys.path); "
            "import pixelfeedback.cli; "
            "assert dict(os.environ) == env, 'environment changed'; "
            "assert sys.path == path, 'sys.path changed'; "
            "assert 'caffe' not in sys.modules, 'caffe imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------- the flags

def parse(argv, *adders):
    parser = argparse.ArgumentParser(prog="tiny")
    for add in adders:
        add(parser)
    return parser.parse_args(argv)


def usage_error(capsys, argv, *adders):
    with pytest.raises(SystemExit) as exc:
        parse(argv, *adders)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_gpu_flag():
    assert parse([], cli.add_gpu).gpu is None
    assert parse(["--gpu", "0"], cli.add_gpu).gpu == 0


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "nan"])
def test_gpu_flag_rejects(value, capsys):
    err = usage_error(capsys, ["--gpu", value], cli.add_gpu)
    assert f"argument --gpu: must be an integer >= 0, got {value!r}" in err


def test_mean_flag():
    add = lambda p: cli.add_mean(p, "the DeepLab mean")  # noqa: E731
    assert parse([], add).mean is None
    assert parse(["--mean", "104.008,116.669, 122.675"], add).mean == (104.008, 116.669,
                                                                       122.675)
    assert parse(["--mean=-1,0,1e2"], add).mean == (-1.0, 0.0, 100.0)


@pytest.mark.parametrize("value", ["1,2", "1,2,3,4", "a,b,c", "1,nan,3", "inf,1,2", "", "1,,2"])
def test_mean_flag_rejects(value, capsys):
    err = usage_error(capsys, [f"--mean={value}"], lambda p: cli.add_mean(p, "none"))
    assert "argument --mean: must be three comma-separated finite numbers B,G,R" in err
    assert f"got {value!r}" in err


def test_out_and_size_flags(capsys):
    add_out = lambda p: cli.add_out(p, "runs/x", "the run folder")  # noqa: E731
    add_size = lambda p: cli.add_size(p, 513, "the input size")  # noqa: E731
    args = parse([], add_out, add_size)
    assert (args.out, args.size) == ("runs/x", 513)
    assert parse(["--size", "0"], add_size).size == 0
    assert "must be an integer >= 0, got '-3'" in usage_error(capsys, ["--size", "-3"],
                                                              add_size)
    at_least_one = lambda p: cli.add_size(p, 1, "crop", minimum=1)  # noqa: E731
    assert "must be an integer >= 1, got '0'" in usage_error(capsys, ["--size", "0"],
                                                             at_least_one)


@pytest.mark.parametrize("kind, good, bad, message", [
    (cli.finite_float, {"-2.5": -2.5, "0": 0.0, "1e3": 1000.0},
     ["nan", "inf", "-inf", "abc", "1e400"], "must be a finite number, got"),
    (cli.positive_float, {"0.5": 0.5}, ["0", "-1", "nan", "inf"],
     "must be a finite number > 0, got"),
    (cli.nonnegative_float, {"0": 0.0}, ["-0.1", "nan"], "must be a finite number >= 0, got"),
    (cli.fraction, {"0": 0.0, "1": 1.0, "0.3": 0.3}, ["1.01", "-0.1", "nan"],
     "must be a finite number >= 0 and <= 1, got"),
    (cli.float_in(0, 1, low_inclusive=False, high_inclusive=False), {"0.5": 0.5},
     ["0", "1", "nan"], "must be a finite number > 0 and < 1, got"),
    (cli.positive_int, {"1": 1, "40": 40}, ["0", "-1", "1.5", "abc", "nan"],
     "must be an integer >= 1, got"),
    (cli.nonnegative_int, {"0": 0}, ["-1", "inf"], "must be an integer >= 0, got"),
])
def test_number_types(kind, good, bad, message):
    for text, value in good.items():
        assert kind(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError) as exc:
            kind(text)
        assert str(exc.value) == f"{message} {text!r}"


def test_number_type_errors_read_well_in_argparse(capsys):
    add = lambda p: p.add_argument("--lr", type=cli.positive_float)  # noqa: E731
    err = usage_error(capsys, ["--lr", "nan"], add)
    assert "argument --lr: must be a finite number > 0, got 'nan'" in err


# ----------------------------------------------------------------------------- the tools' numbers

@pytest.mark.parametrize("script, argv, message", [
    ("tools/synthetic.py", ["--train", "0"],
     "argument --train: must be an integer from 1 to 99999, got '0'"),
    ("tools/synthetic.py", ["--val", "0"], "argument --val: must be an integer from 1 to 99999, got '0'"),
    ("tools/synthetic.py", ["--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
    ("tools/synthetic.py", ["--size", "33"],
     "argument --size: must be an integer 8k+1 >= 65 (e.g. 129, 321, 513), got '33'"),
    ("tools/evaluate.py", ["--model", "m", "--weights", "w", "--data-root", "r", "--list", "l",
                           "--num-classes", "0"],
     "argument --num-classes: must be an integer >= 1, got '0'"),
])
def test_the_tools_numbers_are_checked_by_argparse(script, argv, message, tmp_path, capsys):
    """A usage error (exit 2 with the usage line) before anything runs or is written."""
    from tests.conftest import load_script

    out = tmp_path / "out"
    assert load_script(script).main(["--out", str(out)] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and message in err, err
    assert not out.exists()
