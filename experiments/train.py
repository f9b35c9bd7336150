"""Train an experiment: python experiments/train.py --config NAME [--set KEY=VALUE ...] [--resume]

Configs are the files of experiments/configs/. --set overrides any field by its dotted key
(--set train.steps=200 --set model.d_model=64); all of them apply at once, in any order.

A run lives in runs/<config> when its settings are the config's as written, and in
runs/<config>-<hash> otherwise, the hash naming the settings that differ (--name or --workdir
choose the directory instead). How long a run trains and how often it logs, evaluates and
checkpoints are not part of its settings: the same command with --resume finds the same
directory and continues from its latest checkpoint, and a larger train.steps extends a
finished run. Logs, TensorBoard events, checkpoints and a plot of the curves go there.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from ssmjax.train.checkpoint import CheckpointError
from ssmjax.train.config import available_configs, load_config, override, run_name
from ssmjax.train.loop import train
from ssmjax.train.sharding import maybe_initialize_distributed

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
RUNS_DIR = pathlib.Path("runs")


def build_parser() -> argparse.ArgumentParser:
    lines = __doc__.splitlines()
    parser = argparse.ArgumentParser(description=lines[0].split(": ", 1)[0],
                                     epilog="\n".join(lines[2:]).strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, metavar="NAME",
                        help=f"the experiment, one of: {', '.join(available_configs(CONFIG_DIR))}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field by its dotted key (repeatable)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--name", default=None,
                       help="run directory runs/NAME (default: from the config and its overrides)")
    where.add_argument("--workdir", type=pathlib.Path, default=None, metavar="DIR",
                       help="run directory DIR (default: runs/<config>[-<hash of the overrides>])")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in its directory from the latest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = load_config(args.config, CONFIG_DIR)
        config = override(written, args.set)
        maybe_initialize_distributed()
        workdir = args.workdir or RUNS_DIR / (args.name or run_name(written, config))
        train(config, workdir, resume=args.resume, show_progress=not args.no_progress)
    except (ValueError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
