"""Regenerate the report of every bundled study (studies/*.toml) on the shipped data.

Usage (from the repository root)::

    python scripts/regenerate_reports.py            # all bundled studies
    python scripts/regenerate_reports.py de_exports # only the named ones
    python scripts/regenerate_reports.py --out /tmp/reports

Each study writes data/processed/<name>/ and reports/<name>/ (under --out when given).
Exit status 1 when any study fails; the others still run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from twinimpact.cli import bundled_studies
from twinimpact.errors import TwinImpactError
from twinimpact.studies.runner import run_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="bundled study names (default: all)")
    parser.add_argument("--out", help="output root (default: the repository root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    studies = bundled_studies()
    names = args.names or list(studies)
    unknown = [n for n in names if n not in studies]
    if unknown:
        print(f"unknown studies {unknown}; bundled: {', '.join(studies)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"== {name}", file=sys.stderr)
        try:
            run = run_study(studies[name], out=args.out)
        except TwinImpactError as exc:
            print(f"{name}: failed: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"{name}: {run.outputs.get('report', run.outputs.get('summary'))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
