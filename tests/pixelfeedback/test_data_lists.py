"""pixelfeedback.data_lists: a name twice in a list is an error where predictions are saved by
name (evaluation, the sweep's val list) and a warning naming it elsewhere (a training list,
which then trains on that image more often)."""
import pytest

from pixelfeedback import data_lists
from python_layers import ToolkitError
from tests.conftest import write_tiny_voc


@pytest.fixture
def doubled(tmp_path):
    """A list of three images whose first line comes twice."""
    root = str(tmp_path / "voc")
    list_path = write_tiny_voc(root, n_images=3)
    with open(list_path) as f:
        lines = f.readlines()
    doubled = tmp_path / "doubled.txt"
    doubled.write_text("".join(lines + lines[:1]))
    return root, str(doubled)


def test_a_train_list_naming_an_image_twice_is_a_warning_naming_it(doubled, capsys):
    root, list_path = doubled
    pairs = data_lists.check_list(list_path, root, "--train-list")
    assert len(pairs) == 4
    err = capsys.readouterr().err
    assert err.startswith("WARNING: ") and "'img_0000' more than once" in err
    assert "--train-list" in err and list_path in err


def test_a_val_list_naming_an_image_twice_stays_an_error(doubled, capsys):
    root, list_path = doubled
    with pytest.raises(ToolkitError, match="'img_0000' more than once"):
        data_lists.check_list(list_path, root, "--val-list", unique_names=True)


def test_a_list_without_repeats_says_nothing(tmp_path, capsys):
    root = str(tmp_path / "voc")
    list_path = write_tiny_voc(root, n_images=3)
    data_lists.check_list(list_path, root, "--train-list")
    assert capsys.readouterr().err == ""
