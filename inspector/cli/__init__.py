"""Command line: `inspector <command>`. Exit codes: 0 ok, 2 bad input, 1 runtime failure.

One module per command group registers its sub-commands; each command imports what it needs
lazily, so `inspector check-config` stays instant and the runtime commands never import the
training tool chain.
"""

from __future__ import annotations

import argparse
import logging
import sys

from inspector.cli import devtools, line, model, review, service, training
from inspector.errors import ConfigError, InspectorError

GROUPS = (service, training, model, review, devtools, line)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inspector", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for g in GROUPS:
        g.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(model.legacy_argv(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        return int(a.fn(a) or 0)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except InspectorError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
