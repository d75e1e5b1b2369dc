"""Every option of the offline tool chain's commands says what it does in --help."""

import argparse

import pytest

from inspector.cli import build_parser

TOOLCHAIN = ["synth", "dataset import", "dataset check", "train", "quantize", "eval", "model build"]


def subparser(path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path.split():
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("command", TOOLCHAIN)
def test_every_option_has_help(command):
    undocumented = [a.option_strings or [a.dest] for a in subparser(command)._actions
                    if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert undocumented == []


def test_the_cli_lists_every_import_format():
    from inspector.cli.training import FORMATS
    from inspector.training.importers import FORMATS as READERS

    assert FORMATS == READERS
