"""Shared test set-up: tests import helpers (catalogue, kubecluster) from this folder."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
