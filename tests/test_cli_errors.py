"""Bad input: one clear line on stderr, exit code 2, no run left RUNNING."""

from __future__ import annotations

import mlflow
import pytest
import torch

from sparse_ticket_mlflow.cli import main
from tests.conftest import run_cli, tiny_finished_run


def _assert_clean_failure(args: list[str], message: str, capsys=None) -> None:
    """In-process when ``capsys`` is given (fast), else through a real subprocess."""
    if capsys is None:
        result = run_cli(*args, check=False, timeout=120)
        code, stderr = result.returncode, result.stderr
    else:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        code, stderr = exit_info.value.code, capsys.readouterr().err
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    for run in mlflow.search_runs(search_all_experiments=True, output_format="list"):
        assert run.info.status != "RUNNING"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--game", "tetris_deluxe"], "unknown atari game 'tetris_deluxe'"),
        (["--algo", "ppo"], "unknown algo 'ppo'"),
        (["--total-steps", "0"], "run.total_steps must be positive"),
        (["--total-steps", "-5"], "run.total_steps must be positive"),
        (["--seed", "abc"], "seed must be an integer, got 'abc'"),
        (["--seed", "1.5"], "seed must be an integer"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--overrides", "lr=fast"], "agent.lr must be float"),
        (["--resume", "0123456789abcdef"], "no MLflow run with id"),
        (["--bogus-flag", "1"], "No such option"),
    ],
)
def test_bad_input(tracking, capsys, args, message):
    _assert_clean_failure(["train-dense", *args], message, capsys)


def test_bad_input_through_a_real_process(tracking):
    _assert_clean_failure(["train-dense", "--seed", "x"], "seed must be an integer")


def test_unreadable_checkpoint(tracking, tmp_path):
    run = tiny_finished_run()
    for state in (tmp_path / "ckpt" / run.info.run_id).glob("step_*/state.pt"):
        state.write_bytes(b"garbage")
    _assert_clean_failure(["train-dense", "--resume", run.info.run_id], "cannot read checkpoint")
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"


def test_incompatible_checkpoint(tracking, tmp_path):
    """A checkpoint whose weights do not fit the run's architecture names the parameter."""
    run = tiny_finished_run()
    for path in (tmp_path / "ckpt" / run.info.run_id).glob("step_*/state.pt"):
        state = torch.load(path, weights_only=True)
        state["agent"]["networks"]["q"]["head.weight"] = torch.zeros(3, 512)
        torch.save(state, path)
    _assert_clean_failure(["train-dense", "--resume", run.info.run_id], "head.weight")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "snip"], "unknown method 'snip'"),
        (["--sparsities", "0.6,abc"], "sparsities must be comma-separated numbers"),
        (["--sparsities", "0.6,1.5"], "sparsities must be in (0, 1)"),
        (["--allocation", "random"], "unknown allocation 'random'"),
        (["--scope", "head"], "unknown sparsity scope 'head'"),
        (["--dense-run", "runs:/0123456789abcdef"], "no MLflow run with id"),
        (
            ["--method", "random", "--template", "runs:/0123456789abcdef/sparsity_0.60/mask.pt"],
            "cannot be downloaded",
        ),
    ],
)
def test_find_mask_bad_input(tracking, capsys, args, message):
    _assert_clean_failure(["find-mask", "--preset", "smoke", *args], message, capsys)


def test_template_from_another_architecture_names_the_parameter(tracking, tmp_path, capsys):
    """A MinAtar mask cannot shape an Atari network: the error names the offending layer."""
    from sparse_ticket.sparsity.masks import save_mask

    with mlflow.start_run() as run:
        path = tmp_path / "mask.pt"
        save_mask({"q.encoder.conv1.weight": torch.ones(16, 10, 3, 3, dtype=torch.bool)}, path)
        mlflow.log_artifact(str(path), "sparsity_0.60")
    uri = f"runs:/{run.info.run_id}/sparsity_0.60/mask.pt"
    _assert_clean_failure(
        ["find-mask", "--method", "random", "--game", "pong", "--template", uri],
        "'q.encoder.conv1.weight' has shape (16, 10, 3, 3)",
        capsys,
    )
