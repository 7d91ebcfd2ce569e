"""The docs are the test (issue 26 item 7): the blocks of docs/voc.md marked
<!-- rehearsed --> run in order in a scratch copy of the checkout, against a loopback
mirror of VOC 2012, SBD and LargeFOV's weights in small, changed only by the substitutions
that the page lists under "How this page is tested"; a wrong flag planted in a copy of a
rehearsed block turns the rehearsal red. The docker page's block (make docker-check runs
it) is checked here as far as no engine is needed: its script is made with every
substitution used."""
import os
import re

import pytest

from pixelfeedback import doc_rehearsal
from python_layers import ToolkitError
from tests.conftest import REPO


def page(name):
    with open(os.path.join(REPO, name)) as f:
        return f.read()


@pytest.fixture(scope="module")
def rehearsed_voc(tmp_path_factory):
    """The scratch checkout docs/voc.md's blocks ran in."""
    work = tmp_path_factory.mktemp("rehearsal")
    return doc_rehearsal.rehearse([("docs/voc.md", page("docs/voc.md"))], REPO, keep=str(work))


def test_every_rehearsed_command_of_the_voc_page_runs(rehearsed_voc):
    checkout = rehearsed_voc
    lists = os.path.join(checkout, "data", "lists")
    with open(os.path.join(lists, "train_aug.txt")) as f:   # (SBD train + val + VOC train) - val
        assert len(f.read().splitlines()) == 8
    with open(os.path.join(checkout, "weights", "checksums.json")) as f:
        recorded = f.read()
    assert "vgg16_20M.caffemodel" in recorded and "train2_iter_8000.caffemodel" in recorded
    with open(os.path.join(checkout, "runs", "table31", "table31.md")) as f:
        table = f.read()
    for row in ("| stage-1 baseline (before fine-tuning) |", "| control (softmax only) | 0 |",
                "| control, step schedule continued | 0 |", "| cosine | 0.1 |"):
        assert row in table, row
    with open(os.path.join(checkout, "runs", "table31-released", "table31.md")) as f:
        released = f.read()
    assert "not a fair val measurement" in released and "stage-1 baseline" not in released
    assert not os.path.exists(os.path.join(REPO, "runs", "table31-released"))


def test_a_wrong_flag_planted_in_a_rehearsed_block_turns_the_rehearsal_red(tmp_path):
    text = page("docs/voc.md")
    first = doc_rehearsal.rehearsed_blocks(text, "host")[0][1]
    assert "python tools/fetch_voc.py --sbd " in first
    planted = text.replace("python tools/fetch_voc.py --sbd ",
                           "python tools/fetch_voc.py --sbd --labels-aug ", 1)
    with pytest.raises(ToolkitError) as failed:
        doc_rehearsal.rehearse([("docs/voc.md", planted)], REPO, keep=str(tmp_path))
    message = str(failed.value)
    assert message.startswith("the rehearsal of docs/voc.md failed (exit 2)")
    assert "unrecognized arguments: --labels-aug" in message
    assert not os.path.exists(tmp_path / "checkout" / "data" / "lists")


def test_the_substitutions_are_the_table_of_the_page():
    table = doc_rehearsal.substitutions(page("docs/voc.md"))
    assert ("--gpu 0", "") in table
    assert ("python weights/fetch.py",
            "python weights/fetch.py --base-url {mirror} --width-div 32") in table
    script = doc_rehearsal.rehearsal_script(page("docs/voc.md"), "host", {"mirror": "http://m"},
                                            "docs/voc.md")
    commands = [line for line in script.splitlines() if line.startswith("python ")]
    assert commands[0].startswith("python tools/fetch_voc.py --base-url http://m --no-verify --sbd")
    assert commands[2].startswith("python tools/reproduce_table.py --width-div 32 "
                                  "--baseline-iterations 4 --iterations 4 --losses cosine "
                                  "--lambdas 0.1 --seeds 0 ")
    assert "--gpu 0" not in script


def test_the_docker_page_makes_its_script_with_every_substitution():
    values = {"mirror": "http://127.0.0.1:9", "engine": "podman", "run_options": "--ulimit x",
              "image": "localhost/pixel-feedback:cpu"}
    script = doc_rehearsal.rehearsal_script(page("docs/docker-gpu.md"), "docker", values,
                                            "docs/docker-gpu.md")
    runs = [line for line in script.replace("\\\n", " ").splitlines() if "podman run" in line]
    assert len(runs) == 4
    assert all(line.startswith("podman run --ulimit x --network host ") for line in runs)
    assert all("localhost/pixel-feedback:cpu" in line for line in runs)
    assert "--gpus all" not in script and "docker" not in script.replace("docs/docker-gpu.md", "")
    assert "fetch-data --base-url http://127.0.0.1:9 --no-verify" in script
    assert "fetch-weights --base-url http://127.0.0.1:9 --width-div 32" in script
    assert re.search(r"reproduce --width-div 32 --baseline-iterations 4 .* --seeds 0\s*$",
                     runs[-1])
    with pytest.raises(ToolkitError, match=r"needs \{image\}"):
        doc_rehearsal.rehearsal_script(page("docs/docker-gpu.md"), "docker",
                                       {k: v for k, v in values.items() if k != "image"})


TOY = """# Toy

<!-- rehearsed -->
```sh
python tools/x.py --gpu 0 --gpus 1  # tools/x.py.bak stays
echo x.py
```

## How this page is tested

| written | rehearsed as | why |
|---|---|---|
| `python tools/x.py` | `python tools/x.py --gpu 7` | a placeholder-free change |
| `--gpu 0` | left out | no GPU |
"""


def test_substitutions_replace_whole_words_once():
    script = doc_rehearsal.rehearsal_script(TOY, "host", {}, "toy")
    # one pass: the --gpu 7 put in is not taken out again by the '--gpu 0' row, and
    # '--gpus 1' and 'x.py.bak' are other words
    assert "python tools/x.py --gpu 7  --gpus 1  # tools/x.py.bak stays" in script
    assert script.startswith("set -euo pipefail\nset -x\n# toy, the block at line 5\n")


def test_a_stale_substitution_or_marker_is_an_error():
    stale = TOY + "| `python tools/gone.py` | left out | removed |\n"
    with pytest.raises(ToolkitError, match="'python tools/gone.py' matches nothing"):
        doc_rehearsal.rehearsal_script(stale, "host", {}, "toy")
    loose = TOY.replace("<!-- rehearsed -->\n```sh", "<!-- rehearsed -->\n\n```sh")
    with pytest.raises(ToolkitError, match="toy line 3: <!-- rehearsed --> must stand"):
        doc_rehearsal.rehearsal_script(loose, "host", {}, "toy")
    bad = TOY.replace("| left out |", "| nothing |")
    with pytest.raises(ToolkitError, match="second cell must be"):
        doc_rehearsal.substitutions(bad, "toy")
    with pytest.raises(ToolkitError, match="has no block marked <!-- rehearsed: docker -->"):
        doc_rehearsal.rehearsal_script(TOY, "docker", {}, "toy")
