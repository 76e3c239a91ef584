"""The ``transfer`` entry point: a sparse encoder from a source game, adapted on a target game.

``--mask runs:/<find-mask run>/sparsity_0.80/mask.pt`` names the subnetwork; ``--weights``
chooses what fills it (``ticket``: the source's rewound weights, ``trained``: the source's
weights after training under the mask, ``reinit``: a fresh init under the mask); the value head
is always re-initialised for the target's actions. ``--adapt`` is what happens to the mask on
the target: ``none`` (static), ``gmp`` (prune on to ``--final-sparsity``), ``set`` or ``rigl``.

Baselines (``--baseline``) run through the same entry point and are tagged the same way:
``dense`` from scratch on the target, and sparse only on the target at the mask's sparsity
(or ``--final-sparsity`` without a mask): ``gmp``, ``set``, ``rigl``, or ``random`` (a random mask
with the given mask's per-layer densities, from a fresh init).

Lineage tags (``sparse_ticket.*``) let ``mlflow.search_runs`` and the UI slice the grid:
``condition``, ``source_run_id``, ``source_game``, ``target_game``, ``mask_method``,
``sparsity`` (the sparsity the run *ends* at: ``--final-sparsity`` for ``adapt=gmp``, else the
mask's), ``mask_sparsity`` (the transferred mask's, where it starts), ``weights``, ``adapt``,
``baseline``. A transfer is compared with baselines at its final ``sparsity``.

``--weights reinit`` draws its fresh init from the ``reinit`` stream (``TrainConfig.init_stream``):
with the ``init`` stream it would be bit-identical to the source ticket's rewound init, and the
re-initialisation control would be the ticket condition again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sparse_ticket.building import probe_parameters
from sparse_ticket.checkpoint import CheckpointError, load_weights
from sparse_ticket.config import TrainConfig
from sparse_ticket.sparsity.masks import MaskError, check_compatible, sparsity_report
from sparse_ticket.transfer import (
    ADAPT_REGIMES,
    BASELINES,
    WEIGHT_MODES,
    adapt_config,
    baseline_config,
    encoder_mask,
    encoder_weights,
    final_sparsity,
)
from sparse_ticket_mlflow.contracts import TRANSFER, Tag, request_type
from sparse_ticket_mlflow.errors import InputError
from sparse_ticket_mlflow.runs import (
    TrainRequest,
    build_config,
    download_checked,
    load_mask_uri,
    new_training_run,
    resumable_run,
    resume,
    run_id_of,
)

ENTRY_POINT = TRANSFER


TransferRequest = request_type("TransferRequest", TRANSFER, base=TrainRequest)
"""``train-dense``'s parameters plus the transfer ones (strings, validated here)."""


@dataclass
class Plan:
    """Everything a transfer or baseline run starts from, validated before any run opens."""

    config: TrainConfig
    tags: dict[str, str]
    initial_mask: dict[str, torch.Tensor] | None = None
    initial_weights: dict[str, Any] | None = None


def _final_sparsity(request: TransferRequest) -> float | None:
    text = request.final_sparsity.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"final_sparsity must be a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise InputError(f"final_sparsity must be in (0, 1), got {value}")
    return value


def _source(request: TransferRequest, config: TrainConfig) -> tuple[dict, dict]:
    """The transferred (encoder) mask and the mask's sidecar, checked against the target."""
    mask, sidecar = load_mask_uri(request.mask)
    mask = encoder_mask(mask)
    if not mask:
        raise InputError(f"mask {request.mask!r} has no encoder layers to transfer")
    try:
        check_compatible(mask, probe_parameters(config))
    except MaskError as error:
        raise InputError(f"mask does not fit this architecture: {error}") from None
    return mask, sidecar


def _source_weights(request: TransferRequest, mask_uri: str) -> dict[str, Any] | None:
    if request.weights == "reinit":
        return None
    uri = mask_uri.rsplit("/", 1)[0] + f"/{request.weights}.pt"
    try:
        path, _ = download_checked(uri, f"{request.weights} weights")
        return encoder_weights(load_weights(path))
    except CheckpointError as error:
        raise InputError(str(error)) from None


def _lineage(config: TrainConfig, sidecar: dict, request: TransferRequest) -> dict[str, str]:
    return {
        Tag.ENTRY_POINT: ENTRY_POINT,
        Tag.TARGET_GAME: config.game,
        Tag.ALGO: config.agent.algo,
        Tag.SOURCE_RUN_ID: str(sidecar.get("source_run_id", "")),
        Tag.SOURCE_GAME: str(sidecar.get("source_game", "")),
        Tag.MASK_METHOD: str(sidecar.get("method", "")),
        Tag.MASK_URI: request.mask,
        Tag.WEIGHTS: request.weights,
        Tag.ADAPT: request.adapt,
        Tag.BASELINE: request.baseline,
    }


def plan_transfer(request: TransferRequest) -> Plan:
    """Validate a transfer (or baseline) request completely; nothing is logged yet."""
    config = build_config(request)
    final = _final_sparsity(request)
    if request.baseline:
        return _plan_baseline(request, config, final)
    if not request.mask.strip():
        raise InputError("transfer needs --mask runs:/<find-mask run>/sparsity_<s>/mask.pt")
    if request.weights not in WEIGHT_MODES:
        raise InputError(f"unknown weights {request.weights!r} ({', '.join(WEIGHT_MODES)})")
    if request.adapt not in ADAPT_REGIMES:
        raise InputError(f"unknown adapt regime {request.adapt!r} ({', '.join(ADAPT_REGIMES)})")
    run_id_of(request.mask, "mask")
    mask, sidecar = _source(request, config)
    try:
        adapt_config(config.sparsity, request.adapt, mask, final)
    except ValueError as error:
        raise InputError(str(error)) from None
    if request.weights == "reinit":
        config.init_stream = "reinit"
    tags = _lineage(config, sidecar, request)
    tags[Tag.CONDITION] = "transfer"
    tags[Tag.MASK_SPARSITY] = f"{sparsity_report(mask)['overall']:.6g}"
    tags[Tag.SPARSITY] = f"{final_sparsity(config.sparsity, mask):.6g}"
    return Plan(config, tags, mask, _source_weights(request, request.mask))


def _plan_baseline(request: TransferRequest, config: TrainConfig, final: float | None) -> Plan:
    """Dense from scratch, or sparse on the target alone at the mask's (or the given) level."""
    if request.baseline not in BASELINES:
        raise InputError(f"unknown baseline {request.baseline!r} ({', '.join(BASELINES)})")
    mask, sidecar = (None, {})
    if request.mask.strip():
        mask, sidecar = _source(request, config)
    level = sparsity_report(mask)["overall"] if mask else final
    if request.baseline != "dense" and level is None:
        raise InputError(f"baseline {request.baseline} needs --mask or --final-sparsity")
    try:
        initial_mask = baseline_config(config.sparsity, request.baseline, level, mask, config.seed)
    except ValueError as error:
        raise InputError(str(error)) from None
    request.weights, request.adapt = "reinit", request.baseline
    tags = _lineage(config, sidecar, request)
    tags[Tag.CONDITION] = f"baseline-{request.baseline}"
    tags[Tag.SPARSITY] = "0" if request.baseline == "dense" else f"{level:.6g}"
    tags[Tag.MASK_SPARSITY] = tags[Tag.SPARSITY]
    return Plan(config, tags, initial_mask)


def transfer(request: TransferRequest) -> int:
    """Run the entry point; returns the process exit code."""
    run_id = resumable_run(request)
    if run_id:
        return resume(request, run_id)
    plan = plan_transfer(request)
    return new_training_run(
        request,
        plan.config,
        plan.tags,
        initial_weights=plan.initial_weights,
        initial_mask=plan.initial_mask,
    )
