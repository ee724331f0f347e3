"""Make the project importable when a launcher runs as a script (also from a `ray job submit` copy),
and the options every launcher shares, with one meaning everywhere."""
import argparse
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SET_HELP = ("override a config value (repeatable): a pipeline key (cluster.workers=8, sweep.limit=20), "
            "a stage key (train.lr=1e-5: the stage run here, or every stage of a pipeline run), "
            "or a stage's key by name (repair.train.lr=1e-5)")


def add_pipeline_options(parser) -> None:
    """--pipeline (which pipeline config), --store (which store) and --set (overrides)."""
    parser.add_argument("--pipeline", "--config", dest="pipeline", default="stages/pipeline.yaml",
                        help="pipeline config (default: the embedded one)")
    parser.add_argument("--store", help="store URI (a directory or s3://bucket/prefix); default: the pipeline's")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    # The old spelling of a pipeline override; --set takes pipeline keys too.
    parser.add_argument("--pipeline-set", dest="overrides", action="append", help=argparse.SUPPRESS)
