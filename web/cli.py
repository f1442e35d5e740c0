"""`nordlys web`: the review app on a loopback port (8466), or on another address with a token."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog

from nordlys.daemon import runtime
from nordlys.daemon.config import ConfigError, find_config_file, load_config, Config
from nordlys.daemon.logs import configure_logging
from nordlys.daemon.status import output_folders

REQUIRES = ("starlette", "uvicorn", "jinja2", "prometheus_client", "multipart")
DEFAULT_PORT = 8466  # unassigned by IANA; "NO" "RL" on a phone keypad is 6675, taken
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs the token")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port")
    parser.add_argument("--read-only", action="store_true", help="show everything, move nothing")
    parser.add_argument("--dest", type=Path, help="output root (default: the config's)")
    parser.add_argument("--thumb-cache-mb", type=int, default=256, help="size bound of the thumbnail cache")


def build_site(config: Config, *, config_file: Path | None, read_only: bool, thumb_cache_mb: int):  # -> Site
    from nordlys.web.app import Site
    from nordlys.web.thumbs import ThumbCache

    folders = output_folders(config)
    if not folders:
        raise ConfigError("output_root = null and no inboxes: expected output_root in the config or --dest")
    classifier = runtime.load_classifier(config)
    threshold = config.model.threshold if config.model.threshold is not None else classifier.meta.threshold
    journal = runtime.journal_path(config)
    return Site(config=config, journal_path=journal, root=next(iter(folders.values())).parent, folders=folders,
                threshold=threshold, model_version=classifier.version, read_only=read_only, config_file=config_file,
                thumbs=ThumbCache(journal.parent / "thumbs", max_bytes=thumb_cache_mb * 1024 * 1024,
                                  max_file_bytes=config.model.max_file_bytes, max_pixels=config.model.max_pixels))


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from nordlys.web.app import build_app
    from nordlys.web.security import StartError, is_loopback, load_or_make_token

    config_file = find_config_file(args.config)
    config = load_config(config_file) if config_file is not None else Config()
    configure_logging(format=config.log.format, level=config.log.level)
    config = runtime.apply_overrides(config, dest=args.dest, config_file=config_file)
    site = build_site(config, config_file=config_file, read_only=args.read_only, thumb_cache_mb=args.thumb_cache_mb)
    token, hosts = None, None
    if is_loopback(args.host):
        hosts = LOOPBACK_HOSTS  # a loopback server answers only to loopback names (DNS rebinding)
    else:
        try:
            token, made = load_or_make_token(site.journal_path.parent)
        except OSError as exc:
            raise StartError(f"--host {args.host}: a token is needed beyond loopback, and it could not be "
                             f"made in {site.journal_path.parent} ({exc}); refusing to start") from None
        if made:
            print(f"nordlys web: access token (made now, kept in {site.journal_path.parent}/web-token): {token}\n"
                  f"open http://{args.host}:{args.port}/?token={token}", flush=True)
    print(f"nordlys web: http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}/"
          f"{' (read-only)' if args.read_only else ''}", flush=True)
    app = build_app(site, token=token, allowed_hosts=hosts)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False,
                proxy_headers=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nordlys web")
    parser.add_argument("--config", type=Path)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except ConfigError as exc:
        print(f"nordlys web: {exc}", file=sys.stderr)
        return exc.exit_code
