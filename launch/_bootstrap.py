"""`python launch/<tool>.py` from a checkout (or from the copy `ray job submit --working-dir` makes):
put the checkout root on sys.path so `slm` and its layers import from this same tree.
Installed, the tools run as `slm <command>` or `python -m slm.launch.<tool>` and need none of this."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
