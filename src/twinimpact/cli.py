"""Command line: ``twinimpact run [STUDY.toml] [--out DIR]`` and ``twinimpact list``.

No logic of its own: it parses arguments, sets up progress logging and calls
:func:`twinimpact.studies.runner.run_study`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from pathlib import Path

from .errors import TwinImpactError

DEFAULT_STUDY = "de_exports"


def _studies_dir() -> Path:
    from ._paths import find_repo_root

    return find_repo_root() / "studies"


def bundled_studies() -> dict[str, Path]:
    """Bundled study files by name (``studies/*.toml`` in the repository)."""
    d = _studies_dir()
    return {p.stem: p for p in sorted(d.glob("*.toml"))} if d.is_dir() else {}


def _resolve_study(arg: str | None) -> Path:
    if arg is None:
        arg = DEFAULT_STUDY
    p = Path(arg)
    if p.suffix == ".toml" or p.exists():
        return p
    studies = bundled_studies()
    if arg in studies:
        return studies[arg]
    raise TwinImpactError(f"no study file {arg!r} and no bundled study of that name. "
                          f"Bundled: {', '.join(studies) or 'none'}. Fix: pass a path to a "
                          ".toml file or one of the bundled names (see `twinimpact list`).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="twinimpact",
        description="Impact evaluation of city twinning: ETL, estimators, reports.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study end to end (default: the bundled "
                                     f"'{DEFAULT_STUDY}' study on the shipped data)")
    run.add_argument("study", nargs="?", help="study TOML file or bundled study name")
    run.add_argument("--out", help="output root (default: the repository root)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    sub.add_parser("list", help="list the bundled studies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False)
                        else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "list":
            for name, path in bundled_studies().items():
                title = tomllib.loads(path.read_text()).get("study", {}).get("title", "")
                print(f"{name:24s} {title}")
            return 0
        from .studies.runner import run_study

        result = run_study(_resolve_study(args.study), out=args.out)
    except TwinImpactError as exc:
        print(f"twinimpact: error: {exc}", file=sys.stderr)
        return 2
    print(f"Study {result.study.name!r} finished.")
    for k, p in result.outputs.items():
        print(f"  {k:14s} {p}")
    if result.failures:
        print("Estimators that could not run:")
        for k, msg in result.failures.items():
            print(f"  {k}: {msg}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
