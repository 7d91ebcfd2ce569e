"""GPU bundle stand-in for Pillow (see README.md in the shims folder)."""
