"""Value networks: a convolutional encoder followed by one linear head.

The same :class:`ValueNetwork` serves as the Q network (``num_outputs = num_actions``) and as the
state-value network of DQV (``num_outputs = 1``). Parameter names are part of the public contract,
because sparsity masks are keyed by them::

    encoder.conv1.weight, encoder.conv1.bias, ..., encoder.fc.weight, encoder.fc.bias,
    head.weight, head.bias

Precision: a network built with ``precision="bf16"`` runs its forward pass under
``torch.autocast`` in bfloat16 (convolutions and matrix products in bf16, accumulated in fp32 by
oneDNN/cuBLAS), while its parameters stay float32 and its outputs are cast back to float32, so
everything downstream (TD targets, losses, gradients, Adam) is float32 arithmetic. The
observation is cast from uint8 straight to the compute dtype (0..255 is exact in bf16).

Initialisation is PyTorch's default for ``nn.Conv2d`` / ``nn.Linear`` (Kaiming-uniform weights with
``a = sqrt(5)``, uniform biases in ``+-1/sqrt(fan_in)``): it draws only from torch's global
generator, so construction is deterministic under ``torch.manual_seed``. Lottery-ticket rewinding
to initialisation replays whatever init a run was started with, so no custom scheme is needed.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from sparse_ticket.config import PRECISIONS

__all__ = [
    "COMPUTE_DTYPES",
    "ENCODERS",
    "Encoder",
    "MinAtarEncoder",
    "NatureEncoder",
    "ValueNetwork",
    "build_network",
]


def _conv_out(size: int, kernel: int, stride: int) -> int:
    """Spatial size after an unpadded convolution."""
    return (size - kernel) // stride + 1


class Encoder(nn.Module):
    """Base class of the encoders: maps a uint8 observation batch to flat features.

    Subclasses set :attr:`out_features`, the width of the features that the head reads.
    """

    out_features: int


COMPUTE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
"""The forward pass's arithmetic dtype of each ``AgentConfig.precision``."""
assert tuple(COMPUTE_DTYPES) == PRECISIONS, "one entry per precision of sparse_ticket.config"


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype an encoder casts observations to: autocast's on ``device``, else float32."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def _is_batched(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a ``torch.func.vmap`` batched tensor (a population's forward).

    Layout queries other than the default are not implemented for batched tensors, and the
    grouped convolution that vmap lowers a member-stacked one to chooses its own layout.
    """
    return torch._C._functorch.is_batchedtensor(tensor)


class NatureEncoder(Encoder):
    """The DQN torso of Mnih et al. (2015): three convolutions and a 512-unit layer, each + ReLU.

    Args:
        in_channels: Stacked frames ``C`` of the observation (4 in the standard protocol).
        input_size: Side ``H = W`` of the square observation; 84 gives the classic 3136-wide
            flattened conv output (64 x 7 x 7). Other sizes change only ``fc``'s input width.

    Shapes:
        ``forward``: ``(B, C, H, W)`` uint8 in ``[0, 255]`` -> ``(B, 512)`` float32.
    """

    out_features = 512

    def __init__(self, in_channels: int = 4, input_size: int = 84) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=8, stride=4)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=4, stride=2)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3, stride=1)
        side = _conv_out(_conv_out(_conv_out(input_size, 8, 4), 4, 2), 3, 1)
        if side < 1:
            raise ValueError(f"NatureEncoder needs inputs of at least 36x36, got {input_size}")
        self.fc = nn.Linear(64 * side * side, self.out_features)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Encode ``obs`` ``(B, C, H, W)`` uint8 into features ``(B, 512)``."""
        if obs.dtype != torch.uint8:
            # A float input is ambiguous (already scaled or not?); replay and env give uint8.
            raise TypeError(f"NatureEncoder expects uint8 observations, got {obs.dtype}")
        # Scale on the device: the replay keeps 1 byte per pixel (Mnih et al. 2015). Under bf16
        # autocast cast straight to bf16 (exact for 0..255): the convolution would cast anyway.
        x = obs.to(compute_dtype(obs.device)) * (1.0 / 255.0)
        if x.device.type == "cpu" and not _is_batched(x):
            # oneDNN convolutions are faster on NHWC activations: +25% per DDQN update at batch
            # 32 on 2 threads (measured; CUDA left as is, unmeasured). Only the activations change
            # layout: parameters and their gradients stay NCHW-contiguous for masks/checkpoints.
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return F.relu(self.fc(x.flatten(1)))


class MinAtarEncoder(Encoder):
    """The MinAtar network of Young & Tian (2019): one 3x3 convolution and a 128-unit layer.

    Args:
        in_channels: Object channels of the grid (10 when every game is padded to one layout).
        input_size: Side of the square grid (10 in MinAtar).

    Shapes:
        ``forward``: ``(B, C, 10, 10)`` uint8 or bool of 0/1 -> ``(B, 128)`` float32.
    """

    out_features = 128

    def __init__(self, in_channels: int = 10, input_size: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1)
        side = _conv_out(input_size, 3, 1)
        if side < 1:
            raise ValueError(f"MinAtarEncoder needs inputs of at least 3x3, got {input_size}")
        self.fc = nn.Linear(16 * side * side, self.out_features)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Encode ``obs`` ``(B, C, H, W)`` of 0/1 into features ``(B, 128)``."""
        if obs.dtype not in (torch.uint8, torch.bool):
            raise TypeError(f"MinAtarEncoder expects uint8 or bool observations, got {obs.dtype}")
        # MinAtar grids are already binary: cast without scaling (Young & Tian 2019).
        x = F.relu(self.conv1(obs.to(compute_dtype(obs.device))))
        return F.relu(self.fc(x.flatten(1)))


class ValueNetwork(nn.Module):
    """An encoder and a linear head: Q(s, .) with ``num_actions`` outputs, or V(s) with one.

    Args:
        encoder: The torso; its ``out_features`` sets the head's input width.
        num_outputs: Width of the head (actions for a Q network, 1 for a V network).
        precision: ``fp32`` or ``bf16`` (the module docstring): the forward pass's arithmetic;
            outputs are float32 either way.

    Shapes:
        ``forward``: ``(B, C, H, W)`` uint8 -> ``(B, num_outputs)`` float32.
        ``features``: ``(B, C, H, W)`` uint8 -> ``(B, encoder.out_features)`` float32.
    """

    def __init__(self, encoder: Encoder, num_outputs: int, precision: str = "fp32") -> None:
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be positive, got {num_outputs}")
        if precision not in COMPUTE_DTYPES:
            raise ValueError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_features, num_outputs)
        self.num_outputs = num_outputs
        self.precision = precision

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Values ``(B, num_outputs)`` float32 of the observations ``obs`` ``(B, C, H, W)``."""
        with self.arithmetic(obs.device):
            return self.head(self.encoder(obs)).float()

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, out_features)`` float32 (srank / dormant-unit metrics)."""
        with self.arithmetic(obs.device):
            return self.encoder(obs).float()

    def arithmetic(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bf16 autocast on ``device`` for a ``bf16`` network; nothing for ``fp32``.

        The context every forward of this network runs in; code that calls ``self.encoder``
        itself (the plasticity metrics) enters it too, to see the activations the network
        computes. ``.float()`` on the outputs is a no-op in fp32: the fp32 forward is unchanged.
        """
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=COMPUTE_DTYPES[self.precision])


ENCODERS: dict[str, type[Encoder]] = {"nature": NatureEncoder, "minatar": MinAtarEncoder}
"""Encoder classes by the name used in ``AgentConfig.encoder``."""


def build_network(
    encoder: str, obs_shape: tuple[int, ...], num_outputs: int, precision: str = "fp32"
) -> ValueNetwork:
    """Build a :class:`ValueNetwork` for observations of shape ``obs_shape = (C, H, W)``.

    Args:
        encoder: ``"nature"`` (Mnih et al. 2015) or ``"minatar"`` (Young & Tian 2019).
        obs_shape: One observation's shape ``(C, H, W)``; ``C`` becomes the input channels.
        num_outputs: Head width (``num_actions`` for Q, 1 for V).
        precision: The forward pass's arithmetic, ``fp32`` or ``bf16`` (the module docstring).

    Raises:
        ValueError: For an unknown encoder name or a non-square / non-3-d observation shape.
    """
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r} (one of {', '.join(ENCODERS)})")
    if len(obs_shape) != 3 or obs_shape[1] != obs_shape[2]:
        raise ValueError(f"obs_shape must be a square (C, H, W), got {tuple(obs_shape)}")
    in_channels, size, _ = obs_shape
    return ValueNetwork(ENCODERS[encoder](in_channels, size), num_outputs, precision)
