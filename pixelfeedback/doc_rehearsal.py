"""The docs are the test: the shell blocks of a docs page that carry a rehearsal marker run
in order, changed only by the substitutions the page itself lists (tools/rehearse_docs.py;
tests/pixelfeedback/test_doc_rehearsal.py in CI, docker/docker_check.sh for the `docker run` lines).

A block is rehearsed when the line before its ```sh fence is a marker:

    <!-- rehearsed -->            host commands, run in a scratch copy of the checkout
    <!-- rehearsed: docker -->    `docker run` lines, run by `make docker-check` in the CPU image

The page's section "How this page is tested" holds a table, one row per substitution:
``| `written` | `rehearsed as` | why |`` (``left out`` in the second column removes the
text). Every written text is replaced wherever it stands as a whole word in a rehearsed
block, all in one pass (a replacement is never replaced again); ``{name}`` in a replacement
is filled in by the rehearsal (``{mirror}``: the loopback mirror's URL, ``rehearsal_mirror``;
the docker ones: ``{engine}``, ``{run_options}``, ``{image}``). A substitution that matches
nothing in the page's rehearsed blocks is an error: the page and its note drifted apart.
Only the standard library is imported here, so that a host without the toolkit's Python
packages can write the script (`make docker-check`).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from python_layers import ToolkitError

MARKERS = {"host": "<!-- rehearsed -->", "docker": "<!-- rehearsed: docker -->"}
HEADING = "How this page is tested"
LEFT_OUT = "left out"
FENCE = re.compile(r"^```(sh|bash|shell)\s*$")
CODE_CELL = re.compile(r"^`([^`]+)`$")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
WORD = r"[\w./:-]"   # a written text must not be part of a longer word, path or flag
# What a scratch copy of the checkout leaves out: the build machine's state (.dockerignore's).
NOT_COPIED = {".git", ".venv", "build", "runs", "data", "__pycache__", ".pytest_cache"}


def rehearsed_blocks(text, kind, page="the page"):
    """[(line number of its first command, its text)] of the blocks marked for ``kind``."""
    lines, blocks = text.splitlines(), []
    for index, line in enumerate(lines):
        if line.strip() != MARKERS[kind]:
            continue
        if index + 1 >= len(lines) or not FENCE.match(lines[index + 1]):
            raise ToolkitError(f"{page} line {index + 1}: {MARKERS[kind]} must stand on the "
                               "line right before a ```sh fence")
        end = next((k for k in range(index + 2, len(lines)) if lines[k].startswith("```")),
                   None)
        if end is None:
            raise ToolkitError(f"{page} line {index + 2}: the rehearsed block is never closed")
        blocks.append((index + 3, "\n".join(lines[index + 2:end])))
    return blocks


def _cells(row):
    """The cells of a Markdown table row (no '|' inside code spans here)."""
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def substitutions(text, page="the page"):
    """[(written, rehearsed as)] of the table in the page's "How this page is tested"."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith("#") and line.lstrip("#").strip() == HEADING), None)
    if start is None:
        return []
    found = []
    for number, line in enumerate(lines[start + 1:], start + 2):
        if line.startswith("#"):
            break
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = _cells(line)
        written = CODE_CELL.match(cells[0])
        if written is None:   # the header row
            continue
        rehearsed = CODE_CELL.match(cells[1]) if len(cells) > 1 else None
        if rehearsed is None and (len(cells) < 2 or cells[1] != LEFT_OUT):
            raise ToolkitError(f"{page} line {number}: a substitution's second cell must be "
                               f"a `code span` or '{LEFT_OUT}', got {cells[1:2]}")
        found.append((written.group(1), rehearsed.group(1) if rehearsed else ""))
    return found


def _pattern(written):
    return re.compile(rf"(?<!{WORD}){re.escape(written)}(?!{WORD})")


def unused_substitutions(text, page="the page"):
    """The written texts of the page's substitutions that no rehearsed block contains."""
    blocks = [code for kind in MARKERS for _, code in rehearsed_blocks(text, kind, page)]
    return [written for written, _ in substitutions(text, page)
            if not any(_pattern(written).search(code) for code in blocks)]


def substitute(code, table, values):
    """``code`` with every written text of ``table`` replaced in one pass, placeholders
    filled from ``values`` (a missing one is a ToolkitError naming it)."""
    def fill(template):
        def value(match):
            if match.group(1) not in values:
                raise ToolkitError(f"the substitution {template!r} needs {{{match.group(1)}}}, "
                                   f"which this rehearsal does not give (it gives "
                                   f"{', '.join(sorted(values)) or 'none'})")
            return values[match.group(1)]
        return PLACEHOLDER.sub(value, template)

    if not table:
        return code
    replacements = {written: fill(rehearsed) for written, rehearsed in table}
    alternation = "|".join(re.escape(w) for w in sorted(replacements, key=len, reverse=True))
    pattern = re.compile(rf"(?<!{WORD})(?:{alternation})(?!{WORD})")
    return pattern.sub(lambda match: replacements[match.group(0)], code)


def rehearsal_script(text, kind, values, page="the page"):
    """The bash script of the page's blocks marked for ``kind``, substituted; each command
    is shown as it runs (set -x) and the first failing one stops it (set -e)."""
    unused = unused_substitutions(text, page)
    if unused:
        raise ToolkitError(f"{page}: the substitution of {unused[0]!r} matches nothing in the "
                           f"page's rehearsed blocks; update its '{HEADING}' table")
    table = substitutions(text, page)
    blocks = rehearsed_blocks(text, kind, page)
    if not blocks:
        raise ToolkitError(f"{page} has no block marked {MARKERS[kind]}")
    parts = ["set -euo pipefail", "set -x"]
    for line, code in blocks:
        parts += [f"# {page}, the block at line {line}", substitute(code, table, values)]
    return "\n".join(parts) + "\n"


def scratch_checkout(dest, repo):
    """A copy of the checkout's working tree in ``dest`` (its tracked and new files, or,
    without git, every file outside ``NOT_COPIED``): the rehearsal writes data/, weights/
    and runs/ there, never into the checkout."""
    listed = None
    if os.path.isdir(os.path.join(repo, ".git")) and shutil.which("git"):
        done = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard"], cwd=repo, capture_output=True)
        if done.returncode == 0:
            listed = [name for name in done.stdout.decode().split("\0") if name]
    if listed is None:
        listed = []
        for root, dirs, names in os.walk(repo):
            dirs[:] = [d for d in dirs if d not in NOT_COPIED]
            listed += [os.path.relpath(os.path.join(root, name), repo) for name in names
                       if not name.endswith((".pyc", ".caffemodel"))]
    for name in listed:
        source = os.path.join(repo, name)
        if os.path.isfile(source) and not name.startswith(tuple(d + "/" for d in NOT_COPIED)):
            target = os.path.join(dest, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)
    return dest


HOST_PAGES = ("docs/voc.md",)            # the pages with host blocks (CI rehearses them)
DOCKER_PAGES = ("docs/docker-gpu.md",)   # the pages with `docker run` blocks (docker-check)


def rehearse(pages, repo, keep=None, timeout=600):
    """Rehearse the host blocks of ``pages``: [(name, text)] (a page's name is its path
    relative to ``repo``), in order, in one scratch copy of the checkout, against a
    loopback mirror. ``keep``: the folder to work in and leave in place (its ``checkout/``
    is returned); else a temporary one, removed (None is returned). A failing command
    raises ToolkitError with the end of the log."""
    from pixelfeedback.rehearsal_mirror import make_mirror, serve

    scripts = list(pages)
    work = keep or tempfile.mkdtemp(prefix="rehearsal-")
    try:
        checkout = scratch_checkout(os.path.join(work, "checkout"), repo)
        make_mirror(os.path.join(work, "mirror"))
        env = dict(os.environ, PYTHONPATH=checkout,
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        with serve(os.path.join(work, "mirror")) as url:
            for page, text in scripts:
                script = rehearsal_script(text, "host", {"mirror": url}, page)
                done = subprocess.run(["bash", "-c", script], cwd=checkout, env=env,
                                      capture_output=True, text=True, timeout=timeout)
                if done.returncode != 0:
                    raise ToolkitError(f"the rehearsal of {page} failed (exit "
                                       f"{done.returncode}); the end of its log:\n"
                                       f"{(done.stdout + done.stderr)[-4000:]}")
                print(f"rehearsed {page}: every command of its marked blocks ran")
        return checkout if keep else None
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def run(pages=None, kind="host", print_only=False, values=None, keep=None, repo=None):
    """What tools/rehearse_docs.py does: print the script of ``pages`` (``print_only``,
    with the placeholders' ``values``), or rehearse their host blocks (``rehearse``)."""
    from pixelfeedback.paths import REPO_ROOT
    repo = repo or REPO_ROOT
    pages = list(pages or (HOST_PAGES if kind == "host" else DOCKER_PAGES))
    if kind == "docker" and not print_only:
        raise ToolkitError("the docker blocks run in make docker-check (docker/docker_check.sh);"
                           " give --print-only to see their script")
    texts = []
    for page in pages:
        with open(os.path.join(repo, page)) as f:
            texts.append((page, f.read()))
    if print_only:
        for page, text in texts:
            sys.stdout.write(rehearsal_script(text, kind, dict(values or {}), page))
        return None
    return rehearse(texts, repo, keep)
