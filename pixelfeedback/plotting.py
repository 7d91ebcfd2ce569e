"""Matplotlib figures without pyplot: each on its own Agg canvas (no display, no global
state), saved as PNG atomically (a reader never sees half a file)."""
from pixelfeedback import files


def new_figure(width, height):
    """A Matplotlib figure of ``width`` x ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path, dpi=100, layout=True):
    """Save ``figure`` as a PNG at ``path`` through a temporary beside it (``layout``: lay
    it out first with ``tight_layout``; pass False after a layout of your own)."""
    if layout:
        figure.tight_layout()
    with files.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path
