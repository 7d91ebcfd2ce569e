"""Each setting has one home: the allowed values and default of the template loss's
normalisation, the loss names, the thesis's lambda grid and the sweep's seeds are defined
once (a second literal copy anywhere in the code is a test failure)."""
import ast
import glob
import os

from tests.conftest import REPO
from python_layers.template_similarity import LOSS_NAMES, NORMALIZATIONS
from pixelfeedback import thesis

CODE = [path for pattern in ("pixelfeedback/**/*.py", "python_layers/*.py", "tools/*.py",
                             "weights/*.py", "benchmarks/*.py", "docker/**/*.py")
        for path in glob.glob(os.path.join(REPO, pattern), recursive=True)]
HOMES = {
    "normalize's values": "python_layers/template_similarity.py",
    "loss names": "python_layers/template_similarity.py",
    "the lambda grid": "pixelfeedback/thesis.py",
    "the seeds default": "pixelfeedback/sweep/settings.py",
}


def _literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None


def _grid(value):
    """The lambda grid as numbers, from a tuple/list or a comma-separated string."""
    if isinstance(value, str):
        try:
            value = [float(part) for part in value.split(",")]
        except ValueError:
            return None
    if isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) and not
                                                isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    return None


def definitions(path):
    """[(what, line)] of the literal definitions in one source file."""
    found = []
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Constant)):
            value = _literal(node)
            if isinstance(value, (tuple, list, set)):
                strings = {v for v in value if isinstance(v, str)}
                if set(NORMALIZATIONS) <= strings:
                    found.append(("normalize's values", node.lineno))
                if set(LOSS_NAMES) <= strings:  # a subset is a choice, not a definition
                    found.append(("loss names", node.lineno))
            if _grid(value) == thesis.LAMBDAS:
                found.append(("the lambda grid", node.lineno))
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if any("SEEDS" in name for name in names):
                found.append(("the seeds default", node.lineno))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + \
                list(node.args.defaults) + list(node.args.kw_defaults)
            for arg, default in zip(args, defaults):
                if default is None or _literal(default) is None:
                    continue
                if arg.arg == "seeds":
                    found.append(("the seeds default", node.lineno))
                if arg.arg == "normalize":
                    found.append(("normalize's values", node.lineno))  # its default
    return found


def test_each_setting_is_defined_once_in_its_home():
    seen = {what: [] for what in HOMES}
    for path in CODE:
        for what, line in definitions(path):
            seen[what].append(f"{os.path.relpath(path, REPO)}:{line}")
    for what, home in HOMES.items():
        assert seen[what] and all(place.startswith(home + ":") for place in seen[what]), (
            f"{what} must be defined once, in {home}; found at {', '.join(seen[what])}")
        assert len(seen[what]) == 1, f"{what} defined more than once: {', '.join(seen[what])}"


def test_the_scan_finds_a_planted_second_definition(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('LOSSES = ("correlation", "cosine", "selective_correlation", '
                       '"selective_cosine")\nCHOSEN = ("cosine", "correlation")\nGRID = "0.01,0.05,0.1,0.5,1,5"\n'
                       'DEFAULT_SEEDS = (0, 1, 2)\n'
                       'def build(normalize="none", seeds=(0,)):\n    pass\n')
    assert sorted(what for what, _ in definitions(str(planted))) == [
        "loss names", "normalize's values", "the lambda grid", "the seeds default",
        "the seeds default"]
