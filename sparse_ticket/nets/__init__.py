"""Networks: Nature-CNN and MinAtar encoders with a linear Q or V head."""

from sparse_ticket.nets.networks import (
    ENCODERS,
    Encoder,
    MinAtarEncoder,
    NatureEncoder,
    ValueNetwork,
    build_network,
)

__all__ = [
    "ENCODERS",
    "Encoder",
    "MinAtarEncoder",
    "NatureEncoder",
    "ValueNetwork",
    "build_network",
]
