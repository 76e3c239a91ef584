"""``examples/ddqn_minimal.py``, the read-through version of the loop, runs and learns something."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from sparse_ticket.nets import MinAtarEncoder, ValueNetwork

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddqn_minimal.py"


def load_example():
    spec = importlib.util.spec_from_file_location("ddqn_minimal", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_minimal_ddqn_trains_a_few_hundred_steps(capsys):
    example = load_example()
    args = example.parse_args(["--total-steps", "800", "--learning-starts", "200"])
    assert args.game == "breakout" and args.train_freq == 4  # the minatar preset's values
    torch.manual_seed(args.seed)
    init = ValueNetwork(MinAtarEncoder(), 3).state_dict()  # what train() draws at this seed
    q, scores = example.train(args)
    # (800 - 200) / 4 = 150 updates moved every parameter away from its initial value
    for name, value in q.state_dict().items():
        assert not torch.equal(value, init[name]), name
    assert scores, "a random Breakout paddle loses a ball within 800 steps"
    example.main(["--total-steps", "400", "--learning-starts", "100"])
    assert "breakout:" in capsys.readouterr().out
