"""The command-line entry point: every command's help, and input errors as one-line messages."""

import logging

import pytest

from dwsa_jax.cli import COMMANDS, main


@pytest.fixture(autouse=True)
def restore_logging():
    # main() points the root logger at pytest's captured stderr, which closes after the test.
    # Without the restore, a later log record (JAX logs at exit) fails to write.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: dwsa-jax" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_input_error_is_one_line(tmp_path, capsys):
    predictions = tmp_path / "predictions.json"
    predictions.write_text("{not json")
    status = main(["evaluate", "--predictions", str(predictions), "--data", str(tmp_path), "--task", "x"])
    error = capsys.readouterr().err
    assert status == 1
    assert error.startswith("error: ")
    assert "predictions.json is not valid JSON" in error
    assert "Traceback" not in error


def test_verbose_keeps_traceback(tmp_path):
    predictions = tmp_path / "predictions.json"
    predictions.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        main(["-v", "evaluate", "--predictions", str(predictions), "--data", str(tmp_path), "--task", "x"])
