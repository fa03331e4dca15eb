"""The live ops page's static files (HTML and the vendored uPlot chart library, MIT)."""

from pathlib import Path

PAGE_DIR = Path(__file__).resolve().parent
