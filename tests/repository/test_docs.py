"""The docs hold together (issue 25 items 5-6): every relative link of README.md and
docs/*.md resolves (files, and #anchors to headings by GitHub's rules), the README stays a
short front door that starts with `make demo` and `make test`, and `make help`,
DEVELOPING.md, the docs and every docstring and comment of pixelfeedback/, python_layers/
and tools/ name only repository paths that exist."""
import ast
import glob
import io
import os
import re
import subprocess
import sys
import tokenize

import pytest

from tests.conftest import REPO  # noqa: E402
README_MAX_LINES = 150
CODE_FOLDERS = ("pixelfeedback", "python_layers", "tools")
# Where a named path may not exist in a checkout: what runs write (run folders, data,
# downloaded weights and their checksums, the build, the venv).
RUNTIME_PATHS = ("runs/", "data/", "build/", ".venv/", "weights/snapshots/",
                 "weights/*.caffemodel", "weights/checksums.json")

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")


def repo_path(*parts):
    return os.path.join(REPO, *parts)


def markdown_files():
    return ["README.md"] + sorted(os.path.relpath(p, REPO)
                                  for p in glob.glob(repo_path("docs", "*.md")))


def prose_lines(text):
    """(line number, line) outside fenced code blocks, inline code removed."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            inside = not inside
            continue
        if not inside:
            yield number, re.sub(r"`[^`]*`", "", line)


def github_anchor(heading):
    """The anchor GitHub gives a heading's text: links reduced to their text, lower case,
    punctuation other than '-' and '_' dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub does."""
    seen, result = {}, set()
    with open(path) as f:
        text = f.read()
    inside = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            inside = not inside
            continue
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match and not inside:
            anchor = github_anchor(match.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def broken_links(md_file):
    """'file:line: target (why)' for every relative link of md_file that does not resolve."""
    problems = []
    with open(repo_path(md_file)) as f:
        text = f.read()
    base = os.path.dirname(repo_path(md_file))
    for number, line in prose_lines(text):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(base, path)) if path else repo_path(md_file)
            where = f"{md_file}:{number}: {target}"
            if not os.path.exists(full):
                problems.append(f"{where} (no such file)")
            elif anchor and full.endswith(".md") and anchor not in anchors(full):
                problems.append(f"{where} (no heading with anchor #{anchor} in "
                                f"{os.path.relpath(full, REPO)})")
    return problems


@pytest.mark.parametrize("md_file", markdown_files())
def test_relative_links_resolve(md_file):
    assert broken_links(md_file) == []


def test_anchor_rules_follow_github():
    assert github_anchor("Table 3.1 in small (`make table31-small`)") == \
        "table-31-in-small-make-table31-small"
    assert github_anchor("The same table on `normalize: valid` (the earlier scale)") == \
        "the-same-table-on-normalize-valid-the-earlier-scale"
    assert github_anchor("The sweep's up-front checks") == "the-sweeps-up-front-checks"
    assert github_anchor("Fixations, evaluation and experiments") == \
        "fixations-evaluation-and-experiments"


def test_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Part one\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#part-one) [self](#title) [gone](docs/b.md) [bad](docs/a.md#part-two)\n"
        "```sh\n[in code](docs/c.md)\n```\n# Title\n[web](https://example.com/x)\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    assert broken_links("README.md") == [
        "README.md:1: docs/b.md (no such file)",
        "README.md:1: docs/a.md#part-two (no heading with anchor #part-two in docs/a.md)"]


def test_readme_is_a_short_front_door_that_starts_with_the_two_commands():
    with open(repo_path("README.md")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it under {README_MAX_LINES} and move the "
        "detail to a page in docs/")
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    assert lines[start] == "```sh"
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    block = [line.split("#")[0].strip() for line in lines[start + 1:end]]
    assert block == ["make demo", "make test"]
    assert all(not line.strip() or line.startswith("# ") for line in lines[:start]), \
        "the sh block with make demo and make test must be the README's first lines"


def test_dated_timings_live_only_in_measurements():
    """No measured time with its commit in the README: "about N minutes" and a link."""
    with open(repo_path("README.md")) as f:
        readme = f.read()
    assert not re.search(r"\b\d+ min \d+ s\b", readme)
    assert not re.search(r"\bcommit [0-9a-f]{7}\b", readme)
    assert "docs/measurements.md" in readme


# -- repository paths named in help, docs, docstrings and comments --------------------

def path_pattern():
    tops = sorted({name for name in os.listdir(REPO) if not name.startswith(".git")}
                  | {"runs", "data", "build", ".venv"})
    tops = [re.escape(name) for name in tops if name.replace(".", "").replace("_", "").isalnum()]
    return re.compile(r"(?<![\w./~-])(?:%s)/[\w.*<>{},/+-]*" % "|".join(tops))


def normalized(token):
    return token.rstrip(".,;:'\"`)")


def is_runtime_path(path):
    return any(path.startswith(prefix) if prefix.endswith("/") else
               re.fullmatch(re.escape(prefix).replace(r"\*", r"[^/]*"), path)
               for prefix in RUNTIME_PATHS)


def exists_in_repo(path):
    """True where path names a file or folder of the checkout; <x> and * are wildcards,
    {a,b} alternatives."""
    braces = re.search(r"\{([^{}]*)\}", path)
    if braces:
        return all(exists_in_repo(path[:braces.start()] + choice + path[braces.end():])
                   for choice in braces.group(1).split(","))
    pattern = re.sub(r"<[^>]*>", "*", path)
    return bool(glob.glob(repo_path(pattern))) if "*" in pattern else \
        os.path.exists(repo_path(pattern))


def code_texts(path):
    """(line, text) of every comment and docstring of a Python file."""
    with open(path) as f:
        source = f.read()
    texts = [(tok.start[0], tok.string)
             for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                texts.append((node.body[0].lineno, doc))
    return texts


def make_help():
    done = subprocess.run(["make", "--no-print-directory", "-s", "help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def named_paths():
    """(where, path) for every repository path named by make help, DEVELOPING.md, the
    Markdown docs and the docstrings and comments of the code folders."""
    pattern = path_pattern()
    sources = [("make help", make_help())]
    for md_file in ["DEVELOPING.md"] + markdown_files():
        with open(repo_path(md_file)) as f:
            sources.append((md_file, f.read()))
    for folder in CODE_FOLDERS:
        for path in sorted(glob.glob(repo_path(folder, "**", "*.py"), recursive=True)):
            name = os.path.relpath(path, REPO)
            sources += [(f"{name}:{line}", text) for line, text in code_texts(path)]
    found = []
    for where, text in sources:
        for match in pattern.finditer(text):
            found.append((where, normalized(match.group(0))))
    return found


def missing_paths():
    """'where: path' for named paths that do not exist."""
    return [f"{where}: {path}" for where, path in named_paths()
            if not is_runtime_path(path) and not exists_in_repo(path)]


def test_named_repository_paths_exist():
    missing = missing_paths()
    assert missing == [], ("these name repository paths that do not exist (fix the text, "
                           "or add a run-time output to RUNTIME_PATHS):\n" + "\n".join(missing))


def test_path_check_sees_what_it_must(tmp_path):
    pattern = path_pattern()
    text = ("see tools/netdef.py, prototxt/train_{control,cosine}.prototxt and "
            "runs/<run>/train.log; ~/.cache/pixelfeedback/ is no repository path")
    assert [normalized(m) for m in pattern.findall(text)] == [
        "tools/netdef.py", "prototxt/train_{control,cosine}.prototxt", "runs/<run>/train.log"]
    assert not exists_in_repo("tools/netdef.py")
    assert exists_in_repo("prototxt/train_{control,cosine}.prototxt")
    assert not exists_in_repo("prototxt/train_{control,nothing}.prototxt")
    assert exists_in_repo("docs/images/*.png") and exists_in_repo("weights/<file>")
    assert is_runtime_path("runs/<run>/train.log")
    assert is_runtime_path("weights/train2_iter_8000.caffemodel")
    assert not is_runtime_path("weights/demo/missing.caffemodel")
    assert not is_runtime_path("tools/netdef.py")
