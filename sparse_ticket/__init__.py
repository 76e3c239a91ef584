"""sparse-ticket: do lottery tickets found on one Atari game transfer to another?

The library layer: environments, replay, networks, agents and the training runner. It knows
nothing of MLflow; the tracking layer lives in the ``sparse_ticket_mlflow`` package.
"""

__version__ = "0.1.0"
