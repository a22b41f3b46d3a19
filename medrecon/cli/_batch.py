"""``medrecon batch``: reconstruct every study under a folder (or in a list), resumably."""

from __future__ import annotations

import argparse
import sys

from medrecon.cli._common import add_reconstruct_options, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``batch`` sub-command."""
    p = subparsers.add_parser(
        "batch",
        help="reconstruct many studies (folder or list), resumable, local or Dask",
        description=(
            "Find the studies under INPUT (each folder of DICOM files is one study, each "
            "NIfTI/NRRD/MetaImage file is one; or a .csv with a 'path' column / a .txt list), "
            "reconstruct each into OUTDIR/<study path> and write OUTDIR/summary.csv and "
            "summary.json. Rerunning the same command skips finished studies (DONE.json) and "
            "redoes unfinished ones; failures are recorded in FAILED.json and make the exit "
            "code 1, also on reruns (--retry-failed tries them again)."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="folder of studies, or a .csv/.txt list of them")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="batch output folder")
    run = p.add_argument_group("execution")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="studies in parallel: local processes (default 1, in this process), "
                          "or LocalCluster workers with --scheduler local")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run on Dask: 'local' starts a LocalCluster, or a scheduler address "
                          "such as tcp://head:8786 (outputs must be on a shared file system)")
    run.add_argument("--retry-failed", action="store_true", help="try studies recorded as failed again")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_reconstruct_options(p, labels=False)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``medrecon batch``; exit code 1 when the summary holds failures."""
    from pathlib import Path

    from medrecon.batch import discover_studies, run_batch

    config = config_from_args(args)
    studies = discover_studies(args.input, exclude=args.output)
    print(f"{len(studies)} studies under {args.input}", file=sys.stderr)
    summary = run_batch(studies, args.output, config=config, workers=args.workers,
                        scheduler=args.scheduler, retry_failed=args.retry_failed,
                        input_path=str(Path(args.input)), show_progress=not args.quiet)
    done = len(summary.records) - len(summary.failed)
    print(f"{done} finished, {len(summary.failed)} failed ({summary.skipped} from earlier runs); "
          f"summary: {Path(args.output) / 'summary.csv'}")
    for record in summary.failed:
        print(f"FAILED {record['study']}: {record['error']}", file=sys.stderr)
    return summary.exit_code
