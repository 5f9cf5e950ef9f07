"""Every command refuses bad arguments before importing torch (issues 13 and 14).

Each case runs ``logloss`` in a fresh process (a test process has torch loaded already) and
checks exit status 2, exactly one line ``logloss: error: ...`` naming the problem, and that
``torch`` never entered ``sys.modules`` (nor was the dataset read).

Also: ``--hidden`` widths (``training.config.parse_hidden``) and the completion scripts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from logloss.cli import COMPLETION_SHELLS, build_parser
from logloss.training.config import parse_hidden

# Runs main(argv) with torch blocked: an attempt to import it is recorded, and fails at once
# (instead of costing seconds), and the outcome is reported on stdout's last line.
RUNNER = """
import sys

class BlockTorch:
    attempted = False

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            BlockTorch.attempted = True
            raise ImportError("torch imported before the arguments were checked")

sys.meta_path.insert(0, BlockTorch())
from logloss.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
except ImportError:
    status = 1
print("TORCH_IMPORTED", BlockTorch.attempted)
sys.exit(status)
"""

RUN = "{run}"  # a folder holding a checkpoint.json: a run as far as the argument checks can tell
MISSING = "{missing}"  # a path that does not exist


CASES = [
    # core (cli/core.py)
    (["mle"], "the following arguments are required: OUTCOMES"),
    (["sigmoid", "nan"], "T[0] is nan"),
    (["softmax", "1", "inf"], "T[1] is inf"),
    (["loss", "--logits", "1", "nan", "3", "--target", "0"], "logits[1] is nan"),
    (["loss", "--logits", "1", "--target", "0"], "at least 2 classes"),
    (["loss", "--logits", "1", "2", "--target", "0", "--width", "0"], "--width must be"),
    # predict (cli/predict.py)
    (["predict", "--checkpoint", MISSING, "a.png"], "not a logloss checkpoint directory"),
    (["predict", "--checkpoint", RUN, "--device", "tpu", "a.png"], "invalid choice: 'tpu'"),
    (["predict", "--checkpoint", RUN, "{missing}.png"], "no such image file"),
    (["predict", "--checkpoint", RUN, "--png", "{file}", "a.png"], "--png {file} is a file"),
    # completion (cli/__init__.py)
    (["completion", "fish"], "invalid choice: 'fish'"),
    # train (cli/train.py)
    (["train", "--epochs", "abc"], "invalid int value: 'abc'"),
    (["train", "--validation-size", "0"], "validation_size must be a count of samples >= 1"),
    (["train", "--epochs", "0"], "--epochs must be"),
    (["train", "--hidden", "256,,256"], "width 2 of 3 is empty"),
    (["train", "--lr", "-1"], "--lr must be"),
    (["train", "--target-accuracy", "200"], "--target-accuracy must"),
    (["train", "--resume"], "--resume needs --out DIR"),
    # serve (cli/serve.py)
    (["serve", "--checkpoint", RUN, "--port", "70000"], "--port 70000 is not a TCP port"),
    (["serve", "--checkpoint", MISSING], "is not a directory"),
    (["serve", "--checkpoint", RUN, "--max-body-bytes", "10"], "--max-body-bytes 10 is too"),
    # explain, evaluate, report (cli/explain.py, evaluate.py, report.py, run_arguments.py)
    (["evaluate", "--checkpoint", RUN, "--bins", "0"], "--bins must be at least 1"),
    (["evaluate", "--checkpoint", RUN, "--split", "dev"], "invalid choice: 'dev'"),
    (["evaluate", "--checkpoint", MISSING], "not a logloss checkpoint directory"),
    (["explain", "--checkpoint", MISSING], "not a logloss checkpoint directory"),
    (["explain", "--checkpoint", RUN, "--index", "-1"], "--index must be at least 0"),
    (["report", "--checkpoint", MISSING], "not a logloss checkpoint directory"),
    (["report", "--checkpoint", RUN, "--index", "-1"], "--index must be at least 0"),
    # data (cli/data.py): no torch; --index and --scale checked before the data is read
    (["data", "fetch", "cifar"], "invalid choice: 'cifar'"),
    (["data", "show", "mnist", "--index", "-1"], "--index -1 is negative"),
    (
        ["data", "show", "mnist", "--index", "0", "--png", "x.png", "--scale", "0"],
        "--scale must be an integer from 1 to 64, got 0",
    ),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fake run folder, a missing path, a plain file, and an empty data environment."""
    root = tmp_path_factory.mktemp("args")
    (root / "run").mkdir()
    (root / "run" / "checkpoint.json").write_text("{}")
    (root / "file").write_text("not a folder")
    (root / "empty").mkdir()
    return {
        "run": str(root / "run"),
        "missing": str(root / "missing"),
        "file": str(root / "file"),
        "empty": str(root / "empty"),
    }


def run_logloss(argv: list[str], places: dict[str, str]) -> tuple[int, str, str, bool]:
    """(status, stdout without the marker, stderr, whether torch was imported) of ``logloss``."""
    env = {
        **os.environ,
        "LOGLOSS_DATA": places["empty"],  # no dataset anywhere: data must not be needed
        "XDG_CACHE_HOME": places["empty"],
        "COLUMNS": "200",
    }
    argv = [arg.format(**places) for arg in argv]
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=places["empty"],
        check=False,
    )
    *out, marker = done.stdout.splitlines() or [""]
    assert marker.startswith("TORCH_IMPORTED "), done.stdout + done.stderr
    return done.returncode, "\n".join(out), done.stderr, marker == "TORCH_IMPORTED True"


@pytest.mark.parametrize(("argv", "message"), CASES)
def test_bad_arguments_are_refused_before_torch(places, argv, message):
    status, out, err, torch_loaded = run_logloss(argv, places)
    assert (status, out) == (2, ""), err
    assert err.startswith("logloss: error: "), err
    assert err.count("\n") == 1, err  # one line
    assert message.format(**places) in err
    assert not torch_loaded, f"torch was imported before refusing {argv}"


@pytest.mark.parametrize(
    "command",
    ["mle", "loss", "data", "train", "predict", "explain", "evaluate", "report", "serve"],
)
def test_help_does_not_import_torch(places, command):
    status, out, _, torch_loaded = run_logloss([command, "--help"], places)
    assert status == 0
    assert f"usage: logloss {command}" in out
    assert not torch_loaded


# --------------------------------------------------------------------------------------------
# --hidden (issue 13: "256,,256" and "256," were silently other networks)


@pytest.mark.parametrize(
    ("text", "widths"), [("256", (256,)), ("1024,1024", (1024, 1024)), (" 64 , 32 ", (64, 32))]
)
def test_parse_hidden(text, widths):
    assert parse_hidden(text) == widths


@pytest.mark.parametrize(
    ("text", "where"),
    [("256,,256", "width 2 of 3 is empty"), ("256,", "width 2 of 2 is empty"), (",", "width 1")],
)
def test_parse_hidden_refuses_empty_widths(text, where):
    with pytest.raises(ValueError, match=f"got {text!r} \\({where}"):
        parse_hidden(text)


def test_parse_hidden_refuses_words():
    with pytest.raises(ValueError, match="comma-separated layer widths such as 256,256; got 'x'"):
        parse_hidden("x")


# --------------------------------------------------------------------------------------------
# shell completion (issue 14): generated from the argparse definitions by shtab

# Written out by hand, so that a command missing from the parser fails here too.
COMMANDS = {
    "mle",
    "sigmoid",
    "softmax",
    "loss",
    "data",
    "train",
    "predict",
    "explain",
    "evaluate",
    "report",
    "serve",
    "completion",
}


def subparsers(parser) -> dict:
    """``parser``'s subcommands: name -> parser."""
    (action,) = (a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)


def test_the_parser_has_the_documented_commands():
    assert set(subparsers(build_parser())) == COMMANDS


@pytest.mark.parametrize("shell", COMPLETION_SHELLS)
def test_completion_script_names_every_subcommand(shell, places):
    status, script, err, torch_loaded = run_logloss(["completion", shell], places)
    assert (status, err, torch_loaded) == (0, "", False)
    data_commands = set(subparsers(subparsers(build_parser())["data"]))
    for name in COMMANDS | data_commands:
        assert name in script, f"{shell} completion does not name {name}"
    for option in ("--checkpoint", "--logits", "--epochs", "--png", "--json"):
        assert option in script
    checker = shutil.which(shell)
    if checker is not None:  # the script is valid shell syntax (bash -n / zsh -n)
        path = Path(places["empty"]) / f"completion.{shell}"
        path.write_text(script)
        syntax = subprocess.run([checker, "-n", str(path)], capture_output=True, timeout=60)
        assert syntax.returncode == 0, syntax.stderr
