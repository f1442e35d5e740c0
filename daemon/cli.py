"""The `nordlys` command: parse arguments, load the config, call one function per verb.

Exit codes (documented in README): 0 done; 1 some files could not be read or moved (they stayed
where they were, and the output says why); 2 bad config or arguments, or a verb whose extra is
not installed; 3 the model cannot be used; 130 interrupted; 141 the reader of stdout went away.
`train`, `export`, `eval`, `retrain`, `rollback` and `web` live in their own modules, imported only when
asked for; `train` and `export` need the extras (torch, onnx), `eval` only the daemon's install,
`web` the web extras (nordlys[web]; the daemon never imports it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

import structlog

from nordlys.daemon import runtime, service, status
from nordlys.daemon.classifier import ModelError
from nordlys.daemon.config import Config, ConfigError, find_config_file, load_config
from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.journal import JournalError
from nordlys.daemon.journal_lock import refuse_if_watched
from nordlys.daemon.logs import configure_logging
from nordlys.daemon.pipeline import Pipeline
from nordlys.daemon.scan import scan_inbox
from nordlys.daemon.sorter import format_summary, sort_tree
from nordlys.daemon.undo import recover_interrupted, undo

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
TRAIN_EXTRAS = {"torch", "torchvision", "onnx", "onnxscript", "matplotlib"}  # what nordlys[train] adds

# verb -> module providing add_arguments(parser) and run(args) -> int; imported on use only,
# so the daemon never imports torch.
EXTRA_VERBS = {
    "train": ("nordlys.train.cli", "fine-tune a backbone on your photos (needs nordlys[train])"),
    "export": ("nordlys.export.cli", "export a training run to ONNX, optionally int8 (needs nordlys[train])"),
    "eval": ("nordlys.export.eval_cli", "evaluate an ONNX model on labelled photos, with an HTML report"),
    "retrain": ("nordlys.train.retrain_cli", "retrain the live model's head on your corrections, swap it in if better"),
    "rollback": ("nordlys.daemon.rollback_cli", "put back the model the last retrain replaced"),
    "web": ("nordlys.web.cli", "review and correct in a browser, on 127.0.0.1:8466 (needs nordlys[web])"),
}
WEB_EXTRAS = {"starlette", "uvicorn", "jinja2", "prometheus_client", "multipart"}  # what nordlys[web] adds


def load(args: argparse.Namespace) -> Config:
    """The config file (--config, else the XDG or /etc one), then logging as it says."""
    path = find_config_file(args.config)
    config = load_config(path) if path is not None else Config()
    level = config.log.level if getattr(args, "verbose", True) else "warning"
    configure_logging(format=config.log.format, level=level)
    return config


def cmd_classify(args: argparse.Namespace) -> int:
    config = runtime.apply_overrides(load(args), model=args.model, config_file=find_config_file(args.config))
    classifier = runtime.load_classifier(config)
    files = expand_paths(args.paths, ignore=config.ignore)
    # classify moves nothing: the target only supplies the threshold and review band
    target = runtime.build_target(dataclasses.replace(config, output_root=Path.cwd()), classifier)
    if args.engine == "ray":
        if args.out is None:
            raise ConfigError("--out: missing: expected a .parquet file to write the scores to (--engine ray)")
        engine = import_cluster("classify", "nordlys.cluster.engine")
        if engine is None:
            return EXIT_USAGE
        try:
            report = engine.classify_archive(files, args.out, config=config, target=target,
                                             version=classifier.version, address=args.address, workers=args.workers)
        except engine.ClusterError as exc:
            print(f"nordlys classify: {exc}", file=sys.stderr)
            return exc.exit_code
        print(engine.format_report(report, args.out))
        return EXIT_PARTIAL if report.failed else EXIT_OK
    failures = 0
    with Pipeline(classifier, None, target, max_pixels=config.model.max_pixels,
                  max_file_bytes=config.model.max_file_bytes, dry_run=True) as pipeline:
        for i in range(0, len(files), config.model.batch_size):
            batch = files[i:i + config.model.batch_size]
            verdicts = pipeline.verdicts([PhotoGroup(p, (p,)) for p in batch])
            for path, verdict in zip(batch, verdicts):
                failures += verdict.score is None
                print(format_classification(path, verdict.folder, verdict.score, verdict.reason,
                                            classifier.version, as_json=args.json), flush=True)
    return EXIT_PARTIAL if failures else EXIT_OK


def format_classification(path: Path, label: str, score: float | None, error: str, version: str, *,
                          as_json: bool) -> str:
    if as_json:
        record = {"path": str(path), "label": label, "score": None if score is None else round(score, 6),
                  "model_version": version}
        if score is None:
            record["error"] = error
        return json.dumps(record, ensure_ascii=False)
    if score is None:
        return f"error\t-\t{path}: {error}"
    return f"{label}\t{score:.4f}\t{path}"


def expand_paths(paths: Sequence[Path], *, ignore: Sequence[str]) -> list[Path]:
    """Files as given (even if their name matches an ignore pattern), folders walked recursively."""
    result: list[Path] = []
    for path in paths:
        if path.is_dir():
            result.extend(scan_inbox(path, recursive=True, ignore=ignore).files)
        else:
            result.append(path)
    return result


def import_cluster(verb: str, module: str) -> ModuleType | None:
    """nordlys.cluster needs the cluster extra (ray, pyarrow); it is imported only when asked for.
    None after one line naming the extra that is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        print(f"nordlys {verb}: needs the cluster extras ({exc.name} is not installed): "
              f"pip install 'nordlys[cluster]'", file=sys.stderr)
        return None


def cmd_sort(args: argparse.Namespace) -> int:
    filing = import_cluster("sort", "nordlys.cluster.filing") if args.scores is not None else None
    if args.scores is not None and filing is None:
        return EXIT_USAGE
    if args.source is None:
        if filing is None:
            raise ConfigError("SRC: missing: expected the folder to sort (or --scores FILE)")
        args.source = filing.scores_root(args.scores)
    config = runtime.apply_overrides(load(args), inboxes=[args.source], dest=args.dest, model=args.model,
                                     config_file=find_config_file(args.config))
    classifier = runtime.load_classifier(config)
    target = runtime.build_target(config, classifier)
    inbox = config.inboxes[0]
    with contextlib.ExitStack() as stack:
        journal = None if args.dry_run else stack.enter_context(runtime.open_journal(config))  # a dry run writes nothing
        if journal is not None:
            refuse_if_watched(journal.path, inbox.path)  # a daemon files these photos already: exit 2
            recover_interrupted(journal)
        pipeline = stack.enter_context(Pipeline(classifier, journal, target, max_pixels=config.model.max_pixels,
                                                max_file_bytes=config.model.max_file_bytes, videos=config.videos,
                                                dry_run=args.dry_run))
        sort = (functools.partial(sort_tree, remove_emptied=not args.keep_empty_folders) if filing is None
                else functools.partial(filing.sort_scored, scores=args.scores,
                                       remove_emptied=not args.keep_empty_folders))
        summary = sort(inbox.path, pipeline=pipeline, recursive=inbox.recursive, ignore=config.ignore,
                       journal=journal, batch_size=config.model.batch_size, command=f"sort {inbox.path}")
    print(format_summary(summary, target))
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_PARTIAL if summary.failed else EXIT_OK


def cmd_undo(args: argparse.Namespace) -> int:
    config = load(args)
    since = runtime.parse_since(args.since) if args.since else None
    with runtime.open_journal(config) as journal:
        report = undo(journal, since=since, paths=[p.expanduser().absolute() for p in args.paths],
                      dry_run=args.dry_run, folder_names=dataclasses.asdict(config.folders).values())
    if report.nothing:
        print(f"nothing to undo: {report.nothing}")
        return EXIT_OK
    verb = "would restore" if args.dry_run else "restored"
    print(f"{verb} {len(report.restored)} files")
    for dest, source in report.restored:
        print(f"  {dest} -> {source}")
    for journaled, found in report.found:
        print(f"  found by its sha256: {journaled} is now {found}")
    for path, why in report.renamed:
        print(f"  restored under a new name: {path}: {why}")
    for path, reason in report.skipped:
        print(f"  not restored: {path}: {reason}")
    return EXIT_PARTIAL if report.skipped else EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    source = service.ConfigSource(find_config_file(args.config), inboxes=args.inbox, dest=args.dest, model=args.model)
    config = source.load()
    configure_logging(format=config.log.format, level=config.log.level)
    return service.run_daemon(source, config)


def cmd_status(args: argparse.Namespace) -> int:
    config = runtime.apply_overrides(load(args), inboxes=args.inbox, dest=args.dest, check=False)  # reports, never refuses
    print(status.status_text(config, recent=args.recent, as_json=args.json))
    return EXIT_OK


def common_options() -> argparse.ArgumentParser:
    """--config and -v, which every verb takes (README says so; the extra verbs get them too)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML config (default: $XDG_CONFIG_HOME/nordlys/config.yaml "
                                                    "or /etc/nordlys/config.yaml when present)")
    common.add_argument("-v", "--verbose", action="store_true", help="log every decision (at the config's log level)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(prog="nordlys", description="Find the northern lights in photos and sort them.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("classify", parents=[common], help="score photos and print one line each")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photos or folders")
    p.add_argument("--model", type=Path, help="ONNX model (default: the configured or bundled one)")
    p.add_argument("--json", action="store_true", help="one JSON object per line: path, label, score[, error]")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: score on a Ray cluster into --out (needs nordlys[cluster]); default local")
    p.add_argument("--address", help="Ray cluster to use (default: start a local Ray)")
    p.add_argument("--workers", type=int, metavar="N", help="local Ray: CPUs and scoring actors (default: all CPUs)")
    p.add_argument("--out", type=Path, metavar="FILE", help="--engine ray: the Parquet scores file, resumed when "
                                                            "it exists (unchanged files are not scored again)")
    p.set_defaults(func=cmd_classify)

    p = verbs.add_parser("sort", parents=[common], help="sort an existing folder tree once")
    p.add_argument("source", type=Path, metavar="SRC", nargs="?",
                   help="folder to sort (sub-folders included); with --scores, default: the scored files' folder")
    p.add_argument("--dest", type=Path, help="where aurora/, other/, ... go (default: inside SRC)")
    p.add_argument("--model", type=Path, help="ONNX model (default: the configured or bundled one)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (source → destination) and counts, "
                   "move nothing")
    p.add_argument("--keep-empty-folders", action="store_true", help="keep the folders this sort empties "
                   "(default: remove them, e.g. card1/DCIM/100CANON; SRC itself always stays)")
    p.add_argument("--scores", type=Path, metavar="FILE", help="use the scores of `classify --engine ray`; "
                                                               "changed or new photos are scored here")
    p.set_defaults(func=cmd_sort)

    p = verbs.add_parser("undo", parents=[common], help="move sorted files back where they came from")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="only files at or under these paths")
    p.add_argument("--since", help="undo everything sorted since this time (ISO time, or 90m / 2h / 3d ago)")
    p.add_argument("--dry-run", action="store_true", help="say what would be restored, move nothing")
    p.set_defaults(func=cmd_undo)

    p = verbs.add_parser("watch", parents=[common], help="watch inboxes and file each new photo (the daemon)")
    p.add_argument("--inbox", type=Path, action="append", metavar="DIR", help="folder to watch (repeatable; "
                   "replaces the config's inboxes)")
    p.add_argument("--dest", type=Path, help="where aurora/, other/, ... go (default: the config's output_root)")
    p.add_argument("--model", type=Path, help="ONNX model (default: the configured or bundled one)")
    p.set_defaults(func=cmd_watch)

    p = verbs.add_parser("status", parents=[common], help="what was sorted, the last decisions, files waiting")
    p.add_argument("--inbox", type=Path, action="append", metavar="DIR", help="inbox to count waiting files in")
    p.add_argument("--dest", type=Path, help="output root (default: the config's)")
    p.add_argument("--recent", type=int, default=10, metavar="N", help="show the last N decisions (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object: sorted, waiting, corrections, models, recent")
    p.set_defaults(func=cmd_status)

    for verb, (module, help_text) in EXTRA_VERBS.items():
        p = verbs.add_parser(verb, help=help_text, add_help=False)
        p.set_defaults(func=None, extra_module=module)
    return parser


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """--help names each option's default, except where there is none to name (None, a flag)
    or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def missing_extra(verb: str, module: str | None) -> int:
    """One line naming the extra to install; exit 2, like any request this install cannot run."""
    extra, what = ("web", "web") if verb == "web" else ("train", "training")
    print(f"nordlys {verb}: needs the {what} extras ({module or 'a module'} is not installed): "
          f"pip install 'nordlys[{extra}]'", file=sys.stderr)
    return EXIT_USAGE


def run_extra_verb(verb: str, module_name: str, argv: Sequence[str]) -> int:
    """Hand the remaining arguments to a verb that lives in an optional package. Its module may
    list the optional packages it needs in REQUIRES: they are looked for before it runs, so a
    missing one is one line naming the extra, not a traceback halfway through."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return missing_extra(verb, exc.name)
    # "resolve": a verb module that declares --config itself keeps its own help text
    parser = argparse.ArgumentParser(prog=f"nordlys {verb}", parents=[common_options()], conflict_handler="resolve",
                                     formatter_class=DefaultsHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(list(argv))
    missing = [name for name in getattr(module, "REQUIRES", ()) if importlib.util.find_spec(name) is None]
    if missing:
        return missing_extra(verb, missing[0])
    load(args)  # the config is checked and logging set as -v says, as for every other verb
    try:
        return int(module.run(args))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in TRAIN_EXTRAS | WEB_EXTRAS:
            return missing_extra(verb, exc.name)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = dispatch(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # a reader that left early is noticed here, not at exit as a traceback
        return code
    except BrokenPipeError:
        # `nordlys status | head`: the reader has gone. Say nothing more and exit as a Unix tool
        # killed by SIGPIPE does; stdout goes to /dev/null so the flush at exit cannot complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def dispatch(argv: list[str]) -> int:
    verb = argv[0] if argv else ""
    try:
        if verb in EXTRA_VERBS:
            return run_extra_verb(verb, EXTRA_VERBS[verb][0], argv[1:])
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except (ConfigError, ModelError, JournalError) as exc:
        print(f"nordlys {verb}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        structlog.get_logger(__name__).warning("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
