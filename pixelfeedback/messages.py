"""Messages to the user on stderr during long work: written above the progress bars
(``tqdm.write`` clears them, prints, redraws), so a warning never lands at the end of a
bar's line."""
import sys


def note(message):
    """Print ``message`` on its own line of stderr, above any active progress bar."""
    from tqdm import tqdm

    tqdm.write(str(message), file=sys.stderr)
    sys.stderr.flush()
