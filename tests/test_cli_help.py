"""Every command and every option of `inspector` says what it does in --help (walked from the
parser itself, so a new command or option without help text fails here)."""

import argparse

import pytest

from inspector.cli import build_parser


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                out.append((path, sub))
                out.extend(_commands(sub, path))
    return out


COMMANDS = _commands(build_parser())


def test_the_walk_finds_the_commands():
    names = {name for name, _ in COMMANDS}
    assert {"run", "check-config", "actuator", "upload", "train", "dataset import", "demo", "bench"} <= names


@pytest.mark.parametrize("command", [name for name, _ in COMMANDS])
def test_every_option_has_help(command):
    parser = dict(COMMANDS)[command]
    undocumented = [a.option_strings or [a.dest] for a in parser._actions
                    if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
                    and not (a.help or "").strip()]
    assert undocumented == [], f"inspector {command}: options without help text"


def test_every_command_has_a_summary():
    top = build_parser()
    missing = []
    for parser in [top] + [p for _, p in COMMANDS]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {c.dest for c in action._choices_actions if (c.help or "").strip()}
                missing += [n for n in action.choices if n not in helped]
    assert missing == [], f"commands without a one-line summary: {missing}"
