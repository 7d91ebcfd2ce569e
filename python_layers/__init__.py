"""Caffe Python layers of the toolkit and the NumPy maths they call.

Caffe loads these as ``python_param { module: "python_layers.<name>" layer: ... }``;
the repository root must be on ``PYTHONPATH`` (the venv's ``caffe`` wrapper and
``caffe_toolkit.pth`` see to that).
"""


class ToolkitError(Exception):
    """An error the user can fix. The message names the thing and says what to do.

    Command-line tools print it without a traceback and exit with status 2.
    """
