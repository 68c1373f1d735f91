import torch
from typer.testing import CliRunner

from flows.cli import app


def test_threads_option_sets_torch_threads_before_the_command(tmp_path) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        # The command itself fails fast (no interactions.csv), but the root option has been applied.
        result = CliRunner().invoke(
            app, ["--threads", "1", "data", "validate", "--dataset", "csv", "--data-dir", str(tmp_path)]
        )
        assert result.exit_code == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_threads_must_be_positive() -> None:
    result = CliRunner().invoke(app, ["--threads", "0", "data", "validate"])
    assert result.exit_code == 2
    assert "--threads" in result.output
