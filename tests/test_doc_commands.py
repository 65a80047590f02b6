"""The commands the README and docs/ show are the commands the package has: every module
is a command, every flag is one its parser knows, and the cheap ones run as written (the
smoke search runs in test_search's `smoke` fixture, from docs/search.md)."""

import importlib
import re
import shlex
import subprocess
import sys

import pytest

from nli_tune import SAMPLE_DIR
from tests.helpers import doc_command, doc_commands

SUBCOMMANDS = {"check", "synth", "quality", "rungs", "learning", "gpu", "carry", "scale"}


def _parsed(command: str) -> tuple[str, list[str], list[str]]:
    """(module, subcommand words, flags) of a docs command line."""
    argv = shlex.split(command.replace("[", " ").replace("]", " ").replace("|", " "))
    module = argv[2]
    words = [argv[3]] if len(argv) > 3 and argv[3] in SUBCOMMANDS else []
    flags = [a.split("=")[0] for a in argv if a.startswith("--")]
    return module, words, flags


def _help(module: str, words: list[str], capsys) -> str:
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0, (module, words)
    return capsys.readouterr().out


def test_the_docs_show_commands():
    found = doc_commands()
    files = {name for name, _ in found}
    assert {"README.md", "data.md", "training.md", "search.md", "cluster.md"} <= files
    assert len(found) >= 20


def test_every_documented_command_and_flag_exists(capsys):
    helps: dict[tuple[str, tuple[str, ...]], str] = {}
    missing = []
    for name, command in doc_commands():
        module, words, flags = _parsed(command)
        source = importlib.util.find_spec(module).origin
        text = open(source).read()
        assert 'if __name__ == "__main__":' in text, f"{name}: {module} is not a command"
        key = (module, tuple(words))
        if key not in helps:
            helps[key] = _help(module, words, capsys)
        missing += [f"{name}: {command} ({flag})" for flag in flags if flag not in helps[key]]
    assert not missing, missing


def test_data_check_runs_as_written_on_the_bundled_sample():
    argv = doc_command("nli_tune.data check --data-dir /path/to/redsm5")
    argv[argv.index("/path/to/redsm5")] = str(SAMPLE_DIR)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"ReDSM5 data at .*: OK\n  posts 150 ", r.stdout)
    assert sys.executable == argv[0]
