"""Messages during long work go above the progress bars, never onto a bar's line."""
import sys

from tqdm import tqdm

from pixelfeedback.messages import note


def test_a_note_during_a_bar_is_a_line_of_its_own(capsys):
    bar = tqdm(total=3, desc="training", file=sys.stderr)
    bar.update(1)
    note("snapshot x set aside")
    bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    lines = [part.strip() for part in err.replace("\r", "\n").split("\n")]
    assert "snapshot x set aside" in lines        # alone on its line, not glued to a bar
    assert not any(line.endswith("snapshot x set aside") and line != "snapshot x set aside"
                   for line in lines)
