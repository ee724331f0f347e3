"""Make the project importable when a launcher runs as a script (also from a `ray job submit` copy)."""
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
