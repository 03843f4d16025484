"""The command line: `harness COMMAND ...` (or `python -m harness`). Parsing only; each command is one function.

Exit codes: 0 done; 1 some trainings failed (their reasons are printed); 2 bad input (one line on stderr, no
traceback: spec, data, storage, arguments); 128 + the signal when stopped by SIGINT (130), SIGTERM (143) or SIGHUP
(129): workers end their epoch, their runs are marked KILLED and given back to the queue; rerun to resume.
Commands live in `harness.commands.*` and are imported only when chosen, so `harness run bad.yaml` answers in
well under a second, before pandas, OpenCV or TensorFlow load.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import signal
import sys
from pathlib import Path

from harness.errors import AlreadyReported, HarnessError

EXIT_BAD_INPUT = 2
STUDY_HELP = "study spec file (e.g. studies/quick.yaml) or study name"


def main(argv: list[str] | None = None) -> int:
    from harness import signals

    args = build_parser().parse_args(argv)
    module, function = args.command_fn
    previous = signals.install_parent()
    try:
        return getattr(importlib.import_module(f"harness.commands.{module}"), function)(args) or 0
    except AlreadyReported:
        return EXIT_BAD_INPUT
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:
        stopped = err if isinstance(err, signals.Interrupted) else signals.Interrupted(signal.SIGINT)
        print(f"interrupted ({stopped.args[0]}): finished runs are stored; run the same command again to resume",
              file=sys.stderr)
        return stopped.exit_code
    finally:
        signals.restore(previous)
        # the interpreter's last collection walks every object MLflow, pandas and scipy created (about 1.5 s
        # of a 7-s command); freezing them skips that walk. Nothing here needs a finalizer: stores commit per
        # transaction and child processes were joined.
        gc.freeze()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Why does the same CNN on the same data give "
                                     "different accuracy? Train it many times, varying one thing at a time, and ask.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _training_commands(commands)
    _analysis_commands(commands)
    _utility_commands(commands)
    return parser


def _command(commands: argparse._SubParsersAction, name: str, target: tuple[str, str], help: str):
    sub = commands.add_parser(name, help=help, description=help)
    sub.set_defaults(command_fn=target)
    return sub


def _stores(sub: argparse.ArgumentParser, storage: bool = True) -> None:
    sub.add_argument("--tracking-uri", help="MLflow tracking URI (default: the spec's, else sqlite under ./mlruns)")
    if storage:
        sub.add_argument("--storage", help="Optuna run storage URL (default: sqlite:///mlruns/optuna.db)")


def _study_argument(sub: argparse.ArgumentParser) -> None:
    """SPEC or NAME, positional like every other command; `--study` still works (README examples, scripts)."""
    sub.add_argument("study", nargs="?", help=STUDY_HELP)
    sub.add_argument("--study", dest="study_option", metavar="STUDY", help="the same, as an option")


def _training_commands(commands: argparse._SubParsersAction) -> None:
    run = _command(commands, "run", ("run", "run"), "train every run of a study spec and log it to MLflow")
    run.add_argument("spec", type=Path, help="study YAML, e.g. studies/quick.yaml")
    _stores(run)
    run.add_argument("--workers", type=int, default=1, help="local training processes (default 1)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    worker = _command(commands, "worker", ("run", "worker"), "join a running study from this machine")
    _study_argument(worker)
    worker.add_argument("--storage", help="the study's run storage URL, e.g. postgresql://... (default: "
                        "sqlite:///mlruns/optuna.db, where `run` on this machine keeps it)")
    worker.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the study was started with)")
    worker.add_argument("--workers", type=int, default=1)
    worker.add_argument("--no-progress", action="store_true")

    status = _command(commands, "status", ("run", "status"), "done / running / waiting / failed trainings and ETA")
    status.add_argument("study", help=STUDY_HELP)
    status.add_argument("--storage", help="run storage URL (default: sqlite:///mlruns/optuna.db)")

    tune = _command(commands, "tune", ("tune", "tune"), "Optuna search over a spec's `search` space, then a "
                    "seed-robust re-check")
    tune.add_argument("spec", type=Path, help="study YAML with a `search` section, e.g. studies/tune.yaml")
    _stores(tune)
    tune.add_argument("--workers", type=int, default=1, help="local training processes (default 1)")
    tune.add_argument("--out", type=Path, help="folder for tune.md/tune.json (default: reports/STUDY)")
    tune.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    predict = _command(commands, "predict", ("predict", "predict"), "predictions (id,label; the contest's "
                       "id,digit) from a study's chosen config")
    _study_argument(predict)
    predict.add_argument("--data", type=Path, required=True, help="what to predict, like the study's data: a "
                         "contest csv, or a folder of images, an .npz or a csv")
    predict.add_argument("--out", type=Path, required=True, help="CSV to write (id,label or id,digit)")
    predict.add_argument("--ensemble", type=int, default=1, help="average the softmax of K seeds (default 1)")
    predict.add_argument("--workers", type=int, default=1, help="members trained side by side, one process "
                         "each (default 1)")
    _stores(predict, storage=False)


def _alpha(text: str) -> float:
    """A significance level strictly between 0 and 0.5."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a number in (0, 0.5)") from None
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a number in (0, 0.5)")
    return value


def _positive_pp(text: str) -> float:
    """A difference in percentage points, above 0 and at most 100."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a number of percentage points in (0, 100]")
    return value


def _repeats(text: str) -> int:
    """Seeds per level: an integer of at least 2 (one seed has no spread)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer of at least 2")
    return value


def _analysis_commands(commands: argparse._SubParsersAction) -> None:
    report = _command(commands, "report", ("report", "report"), "statistical report: why does accuracy differ?")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("study", nargs="?", help=STUDY_HELP)
    source.add_argument("--runs", type=Path, help="a runs table CSV instead (see docs/runs-table.md)")
    _stores(report, storage=False)
    report.add_argument("--out", type=Path, help="report folder (default: reports/STUDY)")
    report.add_argument("--delta-pp", type=_positive_pp, default=1.0, help="difference to detect, in pp (default 1)")
    report.add_argument("--alpha", type=_alpha, default=0.05,
                        help="family-wise error rate of the verdict's claims, Holm-controlled (default 0.05)")
    report.add_argument("--resolution-pp", type=_positive_pp, default=None,
                        help="decide each comparison sequentially: an effect, or none larger than this (pp); default: "
                             "the spec's repeats.resolution_pp, else off")
    report.add_argument("--max-repeats", type=_repeats, default=None,
                        help="seeds per level at which an open comparison stops (default: the spec's repeats.max, "
                             "else 30)")

    explain = _command(commands, "explain", ("explain", "explain"), "why did these two runs differ? every "
                       "difference, its effect on accuracy, and the gap against seed noise")
    explain.add_argument("a", help="run A: an MLflow run ID of a training run, or a run config file (config.json)")
    explain.add_argument("b", help="run B: the same")
    explain.add_argument("--repeats", type=int, default=5, help="seed blocks per configuration (default 5)")
    explain.add_argument("--workers", type=int, default=1, help="local training processes (default 1)")
    explain.add_argument("--out", type=Path, help="folder for explain.md/json (default: reports/explain-A-B)")
    _stores(explain)
    explain.add_argument("--no-train", action="store_true", help="only what differs, and seed noise from the "
                         "store's replicates; train no explain study (a trace still replays)")
    explain.add_argument("--trace", action="store_true", help="replay both runs step by step and locate where they "
                         "part (automatic for identical configs and environments with different weights)")
    explain.add_argument("--steps", type=int, help="steps a trace replays (default: the first epoch)")
    explain.add_argument("--alpha", type=_alpha, default=0.05, help="error rate of the intervals, Bonferroni over "
                         "the effects (default 0.05)")
    explain.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    export = _command(commands, "export", ("report", "export"), "write a study's runs table (CSV) from MLflow")
    export.add_argument("study", help=STUDY_HELP)
    export.add_argument("--out", type=Path, required=True, help="CSV path; predictions go beside it")
    _stores(export, storage=False)


def _utility_commands(commands: argparse._SubParsersAction) -> None:
    doctor = _command(commands, "doctor", ("doctor", "doctor"), "versions, devices, why no GPU, determinism, "
                      "store reachability")
    doctor.add_argument("--study", type=Path, help="also check this study's requirements (exit 2 when unmet)")
    doctor.add_argument("--backend", action="append", choices=["tensorflow", "jax", "torch"],
                        help="backend to inspect (repeatable; default: the study's, else tensorflow)")
    _stores(doctor)
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    preview = _command(commands, "preview", ("data", "preview"), "PNG grid of the same samples after each "
                       "preprocessing step")
    preview.add_argument("spec", type=Path)
    preview.add_argument("--out", type=Path, help="output folder (default: reports/STUDY/preview)")
    preview.add_argument("--samples", type=int, default=8)

    data = commands.add_parser("data", help="data utilities")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synth = _command(actions, "synth", ("data", "synth"), "write the embedded synthetic data set as contest CSVs")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--n", type=int, default=2048, help="training images (default 2048, the contest's)")
    synth.add_argument("--n-test", type=int, default=0, help="test images without labels (default 0)")
    synth.add_argument("--seed", type=int, default=0)
    digits = _command(actions, "digits", ("data", "digits"), "write scikit-learn's bundled 8x8 digits (1,797 "
                      "images, offline) as a class-folder tree of PNGs")
    digits.add_argument("--out", type=Path, required=True)
