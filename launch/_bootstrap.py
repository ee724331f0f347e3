"""Make the project importable when a launcher runs as a script (also from a `ray job submit` copy)."""
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def add_pipeline_options(parser, config_flag: str = "--pipeline") -> None:
    """The options every launcher shares: which pipeline config, and which store."""
    parser.add_argument(config_flag, default="stages/pipeline.yaml", help="pipeline config (default: the embedded one)")
    parser.add_argument("--store", help="store URI (a directory or s3://bucket/prefix); default: the pipeline's")
