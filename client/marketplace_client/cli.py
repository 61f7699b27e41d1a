"""``mkt``: fetch an order's delivery, verify a downloaded folder."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from marketplace_client.api import EXIT_ACCESS, EXIT_FILES_WRONG, Api, ClientError
from marketplace_client.transfer import fetch, verify

DEFAULT_URL = "http://127.0.0.1:8000"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mkt", description="Imaging data marketplace client.")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("fetch", help="download every file of an order's delivery into DEST")
    get.add_argument("order", type=int, help="the order's number")
    get.add_argument("dest", type=Path, help="folder to download into (created if missing)")
    get.add_argument("--url", default=os.environ.get("MKT_URL", DEFAULT_URL),
                     help=f"the marketplace's address (env MKT_URL; default {DEFAULT_URL})")
    get.add_argument("--token", default=None, help="a personal access token (default: env MKT_TOKEN)")
    get.add_argument("--jobs", type=int, default=4, help="parallel downloads (default 4)")
    get.add_argument("--retries", type=int, default=2, help="attempts again per file on failure (default 2)")
    get.add_argument("--quiet", action="store_true", help="no progress bar")
    check = commands.add_parser("verify", help="check DEST against its manifest.csv")
    check.add_argument("dest", type=Path)
    return parser


def _print_problems(title: str, lines: list[str]) -> None:
    print(title, file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "verify":
        report = verify(args.dest)
        if report.ok:
            print(f"OK: {report.checked} files match {args.dest / 'manifest.csv'}")
            return 0
        _print_problems(f"{args.dest} does not match its manifest:", report.lines())
        return EXIT_FILES_WRONG
    token = args.token or os.environ.get("MKT_TOKEN", "")
    if not token:
        print("mkt: no token: pass --token or set MKT_TOKEN (create one on your account page, "
              "with the read and download scopes)", file=sys.stderr)
        return EXIT_ACCESS
    api = Api(args.url, token)
    try:
        result = fetch(api, args.order, args.dest, jobs=args.jobs, retries=args.retries,
                       progress_stream=None if args.quiet else sys.stderr,
                       log=lambda line: print(f"mkt: {line}", file=sys.stderr))
    except ClientError as exc:
        print(f"mkt: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mkt: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if result.failed:
        _print_problems(f"mkt: {len(result.failed)} file(s) could not be fetched correctly:",
                        [f"{path}: {why}" for path, why in sorted(result.failed.items())])
        return EXIT_FILES_WRONG
    print(f"OK: {len(result.downloaded)} downloaded, {len(result.skipped)} already present and verified, "
          f"into {args.dest}")
    return 0
