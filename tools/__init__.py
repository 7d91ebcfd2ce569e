"""Importable modules of the toolkit; the command-line scripts beside them are thin."""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
