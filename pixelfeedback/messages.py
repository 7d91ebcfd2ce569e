"""Messages to the user on stderr during long work: written above the progress bars
(``tqdm.write`` clears them, prints, redraws), so a warning never lands at the end of a
bar's line. Where tqdm is absent (the GPU bundle's bare Python) there are no bars either,
and a plain line is written."""
import sys


def note(message):
    """Print ``message`` on its own line of stderr, above any active progress bar."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(str(message), file=sys.stderr)
    else:
        tqdm.write(str(message), file=sys.stderr)
    sys.stderr.flush()
