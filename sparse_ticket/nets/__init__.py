"""Networks: Nature-CNN and MinAtar encoders with a linear Q or V head.

The package is its one module, :mod:`sparse_ticket.nets.networks`, whose ``__all__`` it
re-exports (the names are listed once, there).
"""

from sparse_ticket.nets import networks
from sparse_ticket.nets.networks import *  # noqa: F403

__all__ = networks.__all__
