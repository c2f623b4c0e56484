"""Command line: ``twinimpact run [STUDY.toml] [--out DIR]`` and ``twinimpact list``.

No logic of its own: it parses arguments, sets up progress logging, calls
:func:`twinimpact.studies.runner.run_study` and turns the outcome into an exit status:

=====  ==========================================================================="""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from pathlib import Path

from .errors import EstimationError, TwinImpactError

DEFAULT_STUDY = "de_gravity_etwfe"
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_NO_ESTIMATE = 3
EXIT_INTERRUPTED = 130


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
        description="Impact evaluation of city twinning: ETL, estimators, reports.",
        epilog="Exit status: 0 done, 1 internal error, 2 bad input, 3 no estimate, "
               "130 interrupted.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study end to end (default: the bundled "
                                     f"'{DEFAULT_STUDY}' study on the shipped data)")
    run.add_argument("study", nargs="?", help="study TOML file or bundled study name")
    run.add_argument("--out", help="output folder root (default: the repository root)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    run.add_argument("--debug", action="store_true",
                     help="show the full traceback of any error")
    sub.add_parser("list", help="list the bundled studies")
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False)
                        else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return _command(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("twinimpact: interrupted; no partial output was written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EstimationError as exc:
        if debug:
            raise
        print(f"twinimpact: error: {exc}", file=sys.stderr)
        return EXIT_NO_ESTIMATE
    except TwinImpactError as exc:
        if debug:
            raise
        print(f"twinimpact: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # the file system refused: a path the user gave
        if debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"twinimpact: error: {exc.strerror or exc}{where}. Fix: check the path and "
              "its permissions.", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if debug:
            raise
        print(f"twinimpact: internal error: {type(exc).__name__}: {exc}. This input was not "
              "checked or twinimpact has a bug; rerun with --debug for the traceback and "
              "report it.", file=sys.stderr)
        return EXIT_INTERNAL


def _command(args: argparse.Namespace) -> int:
    if args.command == "list":
        for name, path in bundled_studies().items():
            title = tomllib.loads(path.read_text()).get("study", {}).get("title", "")
            print(f"{name:24s} {title}")
        return EXIT_OK
    from .studies.runner import run_study

    result = run_study(_resolve_study(args.study), out=args.out)
    head = result.study.headline
    if head is not None and head in result.failures:
        raise EstimationError(
            f"no estimate: the headline estimate {head!r} could not be produced: "
            f"{result.failures[head]} (the other estimates are in "
            f"{result.outputs.get('summary', 'the outputs')})")
    print(f"Study {result.study.name!r} finished.")
    for k, p in result.outputs.items():
        print(f"  {k:14s} {p}")
    if result.failures:
        print("Estimators that could not run:")
        for k, msg in result.failures.items():
            print(f"  {k}: {msg}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
