"""Generate the model card of a promoted champion from its run records.

python launch/card.py                         # the latest champion of the pipeline's line
python launch/card.py --version v3-distill --out README.md
"""

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script: python launch/<tool>.py
    import _bootstrap  # noqa: F401

from slm.errors import cli_main
from slm.launch.options import add_pipeline_options
from slm.modeling import champion_pointer
from slm.orchestration import card
from slm.orchestration.lineage import read_champion
from slm.orchestration.stage import open_pipeline


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--line", help="champion line (default: the pipeline's)")
    p.add_argument("--version", help="champion version (default: latest)")
    p.add_argument("--out", help="write the card here (default: stdout); never a path inside the store")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    add_pipeline_options(p, inspect=False)
    args = p.parse_args(argv)
    pipeline, store, _ = open_pipeline(args.pipeline, args.store, args.overrides, existing_store=True)
    pointer = champion_pointer(store, args.line or pipeline.line, args.version)
    store.verify_in_place(pointer.key)  # a card vouches for the files its champion's marker recorded
    text = card.render(store, read_champion(store, pointer.key), pipeline.card)
    if args.out:
        card.write_out(store, Path(args.out), text, force=args.force)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
