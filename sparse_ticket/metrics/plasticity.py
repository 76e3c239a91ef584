"""Plasticity metrics of value networks: dormant units, feature rank, norms, Q statistics.

A tiny functional API on plain tensors (in the spirit of ``rliable``), and a
:class:`PlasticityProbe` that measures all of them for an agent on a fixed probe batch:

- **dormant ratio** (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep RL", ReDo): the
  score of a unit is its mean ``|activation|`` over the batch (and over space for a conv channel),
  divided by the mean score of its layer; a unit is *tau-dormant* when its score is ``<= tau``.
  ``tau = 0`` counts exactly-dead units; 0.025 and 0.1 are the thresholds of the paper's figures.
- **srank** (Kumar et al. 2021, "Implicit Under-Parameterization"): the effective rank of the
  penultimate features, the smallest ``k`` whose top-``k`` singular values carry ``1 - delta`` of
  their sum.
- global L2 **parameter and gradient norms**, and the mean / variance of ``Q(s, a)``: the
  further diagnostics of loss of plasticity (Lyle et al. 2023, "Understanding Plasticity in
  Neural Networks", relate it to parameter norm growth and gradient collapse).

Everything here is a library layer: functions return Python numbers, the runner logs them (under
``plasticity/``). See ``docs/protocol.md`` ("Plasticity over training").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sparse_ticket.replay import ReplayBatch

if TYPE_CHECKING:
    from sparse_ticket.agents.base import Agent
    from sparse_ticket.nets import ValueNetwork

__all__ = [
    "DEFAULT_TAUS",
    "SRANK_DELTA",
    "PlasticityProbe",
    "dormant_ratio",
    "dormant_ratios",
    "encoder_activations",
    "gradient_norm",
    "parameter_norm",
    "srank",
    "unit_scores",
]

DEFAULT_TAUS: tuple[float, ...] = (0.0, 0.025, 0.1)
"""Dormancy thresholds: exactly dead (0) and the two thresholds of Sokar et al. (2023)."""

SRANK_DELTA = 0.01
"""The ``delta`` of srank in Kumar et al. (2021)."""


# ------------------------------------------------------------------------------ dormant units
def unit_scores(activation: torch.Tensor) -> torch.Tensor:
    """Normalised activity score of every unit of one layer (Sokar et al. 2023, eq. 1).

    ``s_i = E_x |h_i(x)| / ((1 / N) sum_k E_x |h_k(x)|)``: the mean absolute activation of unit
    ``i`` over the batch, divided by the mean of that quantity over the layer's ``N`` units. For a
    convolutional map a unit is a channel, and the expectation also runs over the spatial
    positions (as in the public ReDo code). A layer whose units are all silent (mean 0) scores 0
    everywhere.

    Args:
        activation: ``(B, N)`` for a linear layer or ``(B, C, H, W)`` for a conv map (any
            ``(B, units, *spatial)``), usually post-ReLU.

    Returns:
        ``(N,)`` (or ``(C,)``) scores, in the activation's floating dtype, on its device.

    Raises:
        ValueError: If ``activation`` has fewer than 2 dimensions.
    """
    if activation.dim() < 2:
        raise ValueError(f"activation must be (B, units, ...), got shape {tuple(activation.shape)}")
    if not activation.is_floating_point():
        activation = activation.to(torch.float32)
    reduce = [dim for dim in range(activation.dim()) if dim != 1]
    per_unit = activation.detach().abs().mean(dim=reduce)  # (N,)
    layer_mean = per_unit.mean()
    # A zero layer mean means every per-unit mean is 0 (they are >= 0): divide by 1 instead, which
    # gives the all-zero scores without a NaN and without a host synchronisation.
    return per_unit / torch.where(layer_mean > 0, layer_mean, torch.ones_like(layer_mean))


def dormant_ratio(activation: torch.Tensor, tau: float) -> float:
    """Fraction of the layer's units whose :func:`unit_scores` is ``<= tau``.

    Args:
        activation: ``(B, N)`` or ``(B, C, H, W)`` activations of one layer.
        tau: Dormancy threshold; 0 counts exactly-dead units.
    """
    return (unit_scores(activation) <= tau).to(torch.float32).mean().item()


def dormant_ratios(
    activations: Mapping[str, torch.Tensor], taus: Sequence[float] = DEFAULT_TAUS
) -> dict[str, float]:
    """Dormant-unit ratios per layer and threshold, and over all the layers together.

    Args:
        activations: Layer name -> ``(B, N)`` or ``(B, C, H, W)`` activations (one batch).
        taus: Dormancy thresholds.

    Returns:
        ``{f"{layer}/tau_{tau:g}": ratio}`` for every layer and threshold, and
        ``{f"overall/tau_{tau:g}": ratio}``: dormant units over all units of all layers
        (unit-weighted, so a 512-unit layer counts 16x a 32-channel one).

    Raises:
        ValueError: If ``activations`` is empty or names a layer ``"overall"``.
    """
    if not activations:
        raise ValueError("activations is empty: no layer to measure")
    if "overall" in activations:
        raise ValueError("a layer may not be named 'overall' (the key of the aggregate)")
    ratios: dict[str, float] = {}
    dormant = dict.fromkeys(taus, 0)
    total = 0
    for layer, activation in activations.items():
        scores = unit_scores(activation)
        counts = torch.stack([(scores <= tau).sum() for tau in taus]).tolist()  # one sync
        for tau, count in zip(taus, counts, strict=True):
            ratios[f"{layer}/tau_{tau:g}"] = count / scores.numel()
            dormant[tau] += count
        total += scores.numel()
    for tau in taus:
        ratios[f"overall/tau_{tau:g}"] = dormant[tau] / total
    return ratios


# ------------------------------------------------------------------------------ feature rank
def srank(features: torch.Tensor, delta: float = SRANK_DELTA) -> int:
    """Effective rank of a feature matrix (Kumar et al. 2021, eq. 1).

    ``srank_delta(Phi) = min { k : sum_{i <= k} sigma_i / sum_i sigma_i >= 1 - delta }`` with the
    singular values ``sigma_1 >= sigma_2 >= ...`` of ``Phi``, computed in float64 (the tail of small
    singular values is what the threshold cuts, and float32 sums misplace it).

    Args:
        features: ``(B, D)`` features, one row per state (penultimate layer).
        delta: Fraction of the singular-value mass allowed to be left out, in ``[0, 1)``.

    Returns:
        The effective rank, in ``[0, min(B, D)]``; 0 for an all-zero (or empty) matrix.

    Raises:
        ValueError: For a non-2-d ``features`` or ``delta`` outside ``[0, 1)``.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be (B, D), got shape {tuple(features.shape)}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    sigma = torch.linalg.svdvals(features.detach().to(torch.float64))  # descending, >= 0
    total = sigma.sum()
    if total.item() <= 0.0:
        return 0
    cumulative = torch.cumsum(sigma, dim=0) / total
    # ``cumulative`` never decreases, so the count of prefixes below the threshold, plus one, is
    # the smallest k that reaches it; the min guards against the last ratio rounding below 1.
    below = int((cumulative < 1.0 - delta).sum().item())
    return min(below + 1, sigma.numel())


# ------------------------------------------------------------------------------------- norms
def _global_norm(tensors: Iterable[torch.Tensor]) -> float:
    """L2 norm of the concatenation of ``tensors``, accumulated in float64; 0 when empty."""
    norms = [torch.linalg.vector_norm(t.detach(), dtype=torch.float64) for t in tensors]
    if not norms:
        return 0.0
    return torch.linalg.vector_norm(torch.stack(norms)).item()


def parameter_norm(
    named_params: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
) -> float:
    """Global L2 norm of all parameters, ``sqrt(sum_p ||p||_2^2)``.

    Args:
        named_params: Name -> parameter (``Agent.named_parameters()``), or the ``(name, param)``
            pairs of ``nn.Module.named_parameters()``.
    """
    pairs = named_params.items() if isinstance(named_params, Mapping) else named_params
    return _global_norm(param for _, param in pairs)


def gradient_norm(grads: Mapping[str, torch.Tensor]) -> float:
    """Global L2 norm of gradients by name (``Agent.gradients()``), as gradient clipping sees it."""
    return _global_norm(grads.values())


# ------------------------------------------------------------------------------- activations
_LAYER_TYPES = (nn.Conv2d, nn.Linear)


def _recorder(
    outputs: dict[str, torch.Tensor], name: str
) -> Callable[[nn.Module, Any, torch.Tensor], None]:
    """A forward hook that stores the module's output under ``name``."""

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        outputs[name] = output

    return hook


def _encoder_pass(
    network: ValueNetwork, obs: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One encoder forward pass: the ReLU outputs of its layers, and the features it returned.

    The encoders apply ``F.relu`` functionally (there is no ``nn.ReLU`` module to hook), so the
    pre-activation output of every ``nn.Conv2d`` / ``nn.Linear`` child is recorded with a
    temporary forward hook and rectified here: the same ReLU on the same tensor as the forward,
    hence bitwise the activations the network computes, without replicating its forward (the
    input scaling and the CPU channels-last layout of ``NatureEncoder`` stay the encoder's
    business). The hooks are removed before returning, also on error.

    Raises:
        RuntimeError: If the encoder's output is not the ReLU of its last recorded layer (an
            encoder built differently from ``conv... -> fc``, each followed by a ReLU).
    """
    outputs: dict[str, torch.Tensor] = {}  # insertion order = forward order
    handles = [
        module.register_forward_hook(_recorder(outputs, name))
        for name, module in network.encoder.named_children()
        if isinstance(module, _LAYER_TYPES)
    ]
    try:
        # The network's own arithmetic (bf16 autocast for agent.precision=bf16): the metrics
        # describe the activations it computes, returned as float32 like its outputs.
        with network.arithmetic(obs.device):
            features = network.encoder(obs)
    finally:
        for handle in handles:
            handle.remove()
    activations = {name: torch.relu(output) for name, output in outputs.items()}
    if not activations or not torch.equal(next(reversed(activations.values())), features):
        raise RuntimeError(
            f"{type(network.encoder).__name__}: the encoder output is not the ReLU of its last "
            "Conv2d/Linear layer; plasticity metrics assume conv/fc layers each followed by ReLU"
        )
    return {name: a.float() for name, a in activations.items()}, features.float()


def encoder_activations(network: ValueNetwork, obs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Post-ReLU activations of every layer of ``network.encoder`` on ``obs``, by layer name.

    Exactly the tensors the network's forward computes (see :func:`_encoder_pass`); the last
    one equals ``network.features(obs)``. Computed without gradient; the network is not changed
    (its train/eval mode included).

    Args:
        network: A :class:`~sparse_ticket.nets.ValueNetwork`.
        obs: ``(B, C, H, W)`` observations as the encoder takes them (uint8).

    Returns:
        ``{"conv1": (B, 32, 20, 20), "conv2": ..., "conv3": ..., "fc": (B, 512)}`` for the Nature
        encoder on 84x84 inputs; ``{"conv1": (B, 16, 8, 8), "fc": (B, 128)}`` for MinAtar.
    """
    with torch.no_grad():
        activations, _ = _encoder_pass(network, obs)
    return activations


# ------------------------------------------------------------------------------------- probe
class PlasticityProbe:
    """A fixed batch of transitions on which an agent's plasticity metrics are measured.

    The same states at every measurement make the metrics comparable over training (Sokar et al.
    2023 and Kumar et al. 2021 measure on sampled replay batches; a fixed probe removes that
    sampling noise from the curves). The probe keeps clones of the batch's tensors, so a replay
    batch (views of the replay's scratch buffer) can be passed directly.

    Args:
        batch: ``B`` transitions; ``obs`` / ``next_obs`` ``(B, C, H, W)`` uint8.

    Raises:
        ValueError: If the batch is empty or its tensors disagree on ``B``.
    """

    def __init__(self, batch: ReplayBatch) -> None:
        batch = ReplayBatch(*(tensor.detach().clone() for tensor in batch))
        if batch.obs.dim() != 4:
            raise ValueError(f"probe obs must be (B, C, H, W), got {tuple(batch.obs.shape)}")
        sizes = {name: tensor.shape[0] for name, tensor in zip(batch._fields, batch, strict=True)}
        if len(set(sizes.values())) != 1 or batch.obs.shape[0] < 1:
            raise ValueError(f"probe batch must hold B >= 1 transitions in every field: {sizes}")
        self._batch = batch

    @property
    def batch(self) -> ReplayBatch:
        """The probe's own transitions (do not modify them in place)."""
        return self._batch

    @property
    def size(self) -> int:
        """Number of probe transitions ``B``."""
        return int(self._batch.obs.shape[0])

    def measure(self, agent: Agent) -> dict[str, float]:
        """All plasticity metrics of ``agent`` on the probe batch, by flat name.

        Per role ``r`` of ``agent.networks()`` (``q``, and ``v`` for DQV / DQV-Max):

        - ``r/dormant/{layer}/tau_{tau:g}`` and ``r/dormant/overall/tau_{tau:g}`` for every
          encoder layer and ``tau`` in :data:`DEFAULT_TAUS` (:func:`dormant_ratios` of the
          post-ReLU activations on the probe ``obs``);
        - ``r/srank``: :func:`srank` of the penultimate features ``network.features(obs)``;
        - ``r/param_norm``: :func:`parameter_norm` of the online network;
        - ``r/grad_norm``: :func:`gradient_norm` of the dense gradient of ``r``'s loss on the
          probe batch (``agent.gradients``: before masking and clipping);

        and ``q/q_mean``, ``q/q_var``: mean and population variance of ``Q(s, a)`` of the online
        Q network over the ``B x A`` probe states and actions.

        Only the gradient call builds a graph; the rest runs under ``torch.no_grad()``. The agent
        is left as it was: parameters, optimiser state, every ``.grad`` (restored after
        ``agent.gradients``, which clears them) and the networks' train/eval modes.
        """
        networks = agent.networks()
        grads = _gradients_keeping_grad(agent, self._batch)
        obs = self._batch.obs.to(agent.device, non_blocking=True)
        metrics: dict[str, float] = {}
        with torch.no_grad():
            for role, network in networks.items():
                activations, features = _encoder_pass(network, obs)
                for key, ratio in dormant_ratios(activations).items():
                    metrics[f"{role}/dormant/{key}"] = ratio
                del activations  # the conv maps are the largest tensors here
                metrics[f"{role}/srank"] = float(srank(features))
                metrics[f"{role}/param_norm"] = parameter_norm(network.named_parameters())
                prefix = f"{role}."
                metrics[f"{role}/grad_norm"] = gradient_norm(
                    {name: grad for name, grad in grads.items() if name.startswith(prefix)}
                )
                if role == "q":
                    q_values = network.head(features)  # (B, A) == network(obs)
                    stats = torch.stack([q_values.mean(), q_values.var(correction=0)])
                    metrics["q/q_mean"], metrics["q/q_var"] = stats.tolist()
        return metrics

    def state_dict(self) -> dict[str, torch.Tensor]:
        """CPU copies of the probe's tensors by :class:`ReplayBatch` field name.

        Plain tensors only, so ``torch.load(..., weights_only=True)`` reads it. A 512-state
        Atari probe is ~29 MB (``obs`` and ``next_obs``, 28 KB each per state).
        """
        return {
            name: tensor.detach().to("cpu", copy=True)
            for name, tensor in zip(self._batch._fields, self._batch, strict=True)
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> PlasticityProbe:
        """Rebuild a probe from :meth:`state_dict` output.

        Raises:
            ValueError: If the keys are not exactly the :class:`ReplayBatch` fields.
        """
        expected = set(ReplayBatch._fields)
        if set(state) != expected:
            raise ValueError(f"probe state: expected keys {sorted(expected)}, got {sorted(state)}")
        return cls(ReplayBatch(**{name: state[name] for name in ReplayBatch._fields}))


def _gradients_keeping_grad(agent: Agent, batch: ReplayBatch) -> dict[str, torch.Tensor]:
    """``agent.gradients(batch)``, with every online ``.grad`` restored afterwards.

    ``Agent.gradients`` leaves the optimisers' ``.grad`` at ``None``; the probe must not change
    the agent, so the previous gradient tensors (untouched: ``autograd.grad`` does not accumulate)
    are put back, also when the call fails.
    """
    params = agent.named_parameters()
    saved = {name: param.grad for name, param in params.items()}
    try:
        return agent.gradients(batch)
    finally:
        for name, param in params.items():
            param.grad = saved[name]
