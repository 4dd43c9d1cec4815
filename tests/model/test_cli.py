"""The `vmmoe` command's surface: `python -m model`, `--version`, and help text on every sub-command and positional."""
import argparse
import subprocess
import sys

import pytest

from model import schema
from model.cli import build_parser, command_paths, main
from model.train import TrainConfig
from model.version import __version__


def test_every_subcommand_and_positional_has_help():
    found = list(command_paths())
    assert {p for p, _, _ in found} >= {("audit",), ("ingest",), ("search",), ("store",), ("store", "info"),
                                        ("store", "repair"), ("train",), ("runs",)}
    missing = [" ".join(p) for p, _, h in found if not h]
    missing += [f"{' '.join(p)} {a.dest}" for p, sub, _ in found for a in sub._actions
                if not a.option_strings and not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert not missing, f"no help text: {missing}"


def test_bench_is_not_a_product_command():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "train"])


def test_version_and_python_dash_m_model(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"vmmoe {__version__}"
    p = subprocess.run([sys.executable, "-m", "model", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "audit" in p.stdout and "train" in p.stdout, p.stderr


def test_train_help_lists_every_config_key_from_the_schema(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for s in TrainConfig.form_fields():
        assert s.name.removeprefix("model.") in out
    assert "one of packed, padded, single, packed-leaky" in out
    assert schema.spec(TrainConfig, "lr").describe() in out
