"""The tool chain's CLI lists every import format the importers read (help text: tests/test_cli_help.py)."""


def test_the_cli_lists_every_import_format():
    from inspector.cli.training import FORMATS
    from inspector.training.importers import FORMATS as READERS

    assert FORMATS == READERS
