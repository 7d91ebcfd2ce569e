"""The scaffolding the per-script flag tests (tests/tools/test_*_flags.py) share (issue 20 item 9):
run a script's own main() in-process with its one library call replaced by a recorder, and
check that each flag of a table changes what it names and nothing else, that the table
covers every flag of the parser, and that a bad value is a usage error naming the flag.
Each test file keeps only its table of flags and its script's own tests."""
import inspect
import io
import sys

from tests.conftest import load_script


class Terminal(io.StringIO):
    """A stderr that says it is a terminal: the scripts draw bars there unless --no-progress,
    so --no-progress has a default to change."""

    def isatty(self):
        return True


def flag_argv(flag, value):
    """The command line of one table row: a switch alone (``value`` None) or the flag and
    its value."""
    return [flag] if value is None else [flag, value]


def flag_ids(table):
    """pytest ids for a table of (flag, ...) rows: the flags."""
    return [row[0] for row in table]


def table_flags(table):
    """The flags a table of (flag, ...) rows covers."""
    return {row[0] for row in table}


def parser_flags(script):
    """Every ``--`` option of ``script``'s parser but --help: what its table must cover, so a
    flag added to the script without a test fails."""
    parser = load_script(script).build_parser()
    return {option for action in parser._actions for option in action.option_strings
            if option.startswith("--")} - {"--help"}


def bound_call(signature, args, kwargs):
    """A call's arguments by the real function's parameter names, defaults filled and the
    ``**options`` part spread among them (what the function reads, however it was passed)."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    call = dict(bound.arguments)
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            call.update(call.pop(parameter.name, {}))
    return call


def capture_call(monkeypatch, script, module, name, result=None, bind=True, needed=()):
    """Replace ``module.name`` (the library call ``script`` makes) by a recorder returning
    ``result``, and return ``run(*argv, terminal=True, needed=needed)``: the script's main()
    on ``needed + argv`` (asserted to exit 0) -> what the call received: with ``bind`` its
    arguments as a dict (``bound_call``), else its one argument as is (a namespace).

    The script is loaded after the patch, so one that imported the name gets the recorder
    too. ``terminal``: stderr is a ``Terminal`` (bars on unless --no-progress) or not."""
    signature = inspect.signature(getattr(module, name))   # the real function's
    seen = []

    def fake(*args, **kwargs):
        if bind:
            seen.append(bound_call(signature, args, kwargs))
        else:
            (argument,) = args
            seen.append(argument)
        return result

    monkeypatch.setattr(module, name, fake)
    return _runner(monkeypatch, script, lambda: None, seen.pop, needed)


def record_steps(monkeypatch, script, seen, preset=(), needed=()):
    """For a fixture whose recorders, standing in for the steps of the real library call,
    write into the dict ``seen``: ``run(*argv, terminal=True, needed=needed)`` empties
    ``seen``, gives it ``preset`` (what a step that is not called leaves), runs the script's
    main() on ``needed + argv`` (asserted to exit 0) -> a copy of ``seen``."""
    def start():
        seen.clear()
        seen.update(preset)
    return _runner(monkeypatch, script, start, lambda: dict(seen), needed)


def _runner(monkeypatch, script, start, result, needed):
    loaded = load_script(script)   # after the fixture's patches

    def run(*argv, terminal=True, needed=needed):
        start()
        # set here, not at fixture setup: pytest's capture replaces stderr for the test call
        stderr = Terminal() if terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        assert loaded.main(list(needed) + list(argv)) == 0, stderr.getvalue()
        return result()
    return run


def _get(call, key):
    return call[key] if isinstance(call, dict) else getattr(call, key)


def changes(default, given):
    """{key: value} of what ``given`` (a dict or a namespace) holds that ``default`` does
    not, or holds otherwise."""
    default, given = (c if isinstance(c, dict) else vars(c) for c in (default, given))
    return {key: given[key] for key in given if given[key] != default.get(key)}


def assert_flag_reaches(run, flag, value, key, expected, *before, only=True):
    """``run(*before)`` and then with the flag: ``key`` of what it captured is ``expected``
    with the flag and not without it, and (``only``) nothing else changed. A flag wired to
    the wrong argument, to none, or to one more, fails."""
    default = run(*before)
    given = run(*before, *flag_argv(flag, value))
    assert _get(given, key) == expected and _get(default, key) != expected
    if only:
        assert set(changes(default, given)) == {key}


def assert_flag_changes(run, flag, value, expected):
    """With the flag, what ``run`` captured differs from the default in ``expected`` ({key:
    value}) and nowhere else."""
    default = run()
    given = run(*flag_argv(flag, value))
    assert changes(default, given) == expected


def assert_usage_error(script, argv, named, capsys):
    """``script``'s main() on ``argv`` exits 2 (argparse's usage error, or the library's
    ``error:``) with ``named`` (the flag, ``argument --flag``) in what it wrote to stderr."""
    assert load_script(script).main(list(argv)) == 2
    assert named in capsys.readouterr().err
