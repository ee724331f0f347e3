"""Check a Ray cluster before a long job goes on it (the preflight, slm/preflight.py).

    slm cluster check [--config stages/pipeline.yaml] [--store s3://bucket/prefix] [--set cluster.workers=16]

Nodes joined (address, interface, CPUs and GPUs by name), the project commit on every node, a store
write/read/delete probe from every node, and an all-reduce over `cluster.workers` training workers
with its bus bandwidth. Exit 0 when the cluster is ready; 2 with one `error:` line when it is not
(a local store on more than one node without `cluster.store_shared`, a node at another commit, a node
that cannot reach the store, a failed all-reduce). The report goes to stdout, and with --json as JSON.
"""

import argparse
import json

if not __package__:  # run as a script: python launch/<tool>.py
    import _bootstrap  # noqa: F401

from slm.errors import UserError, cli_main
from slm.launch.options import add_pipeline_options


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["check"], help="check: the preflight")
    p.add_argument("--no-allreduce", action="store_true", help="skip the all-reduce (nodes and store only)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_pipeline_options(p, inspect=False)
    args = p.parse_args(argv)

    from slm import cluster, preflight
    from slm.orchestration.stage import open_pipeline

    pipeline, store, _ = open_pipeline(args.pipeline, args.store, args.overrides)
    cluster.connect()
    report, problems = preflight.check(pipeline, store.uri, allreduce=not args.no_allreduce)
    if args.json:
        print(json.dumps({**report, "problems": problems}, indent=2, default=str))
    else:
        print("\n".join(preflight.render(report, problems)))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"cluster check: {problems[0]}{more}")


if __name__ == "__main__":
    main()
