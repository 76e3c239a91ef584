"""A find-mask run's rounds and tickets in the tracking store (the chain's :class:`RoundHooks`).

Every training round of a find-mask chain is a run nested under the find-mask run (tags
``entry_point=find-mask/round``, ``round``, ``sparsity``, ``method``; params ``round``,
``round_sparsity``), and every ticket a level's folder of artifacts on the find-mask run
(``sparsity_0.60/{mask,ticket,trained,rewind}.pt`` and a sidecar beside each, see
:mod:`sparse_ticket_mlflow.find_mask`), a row of ``tickets.json`` and ``ticket/*`` metrics at step
``round(sparsity * 1000)``. A chain run again finds its earlier round runs and continues in them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking.context.registry import resolve_tags

from sparse_ticket.config import TrainConfig
from sparse_ticket.lottery import Ticket, flat_weights
from sparse_ticket.metric_log import MetricSink, NullSink
from sparse_ticket.sparsity.masks import (
    architecture_fingerprint,
    content_hash,
    overlap,
    role_sparsity,
    save_mask,
    sparsity_report,
)
from sparse_ticket.stats.bootstrap import interquartile_mean
from sparse_ticket_mlflow.contracts import (
    FIND_MASK_ROUND,
    MASK,
    REWIND,
    TICKET,
    TICKETS,
    TRAINED,
    Tag,
    sparsity_folder,
)
from sparse_ticket_mlflow.runs import file_hash
from sparse_ticket_mlflow.tracking import MlflowSink, last_logged_step


class MlflowRounds:
    """:class:`~sparse_ticket.lottery.RoundHooks` that nest a run per round and log tickets.

    Driven again on a run that has started before (a resumed chain), a round whose nested run
    exists is continued in it: a FINISHED one logs nothing more (its runner resumes its final
    checkpoint), an interrupted one is reopened and logs only steps after its last logged one;
    ticket metrics already logged are not logged twice.
    """

    def __init__(self, parent_id: str, config: TrainConfig, method: str, scratch: Path) -> None:
        self.parent_id = parent_id
        self.config = config
        self.method = method
        self.scratch = scratch
        self.rounds: dict[int, str] = {}
        self.summary: list[dict[str, Any]] = []
        self.previous_mask: dict[str, torch.Tensor] | None = None
        self.earlier = earlier_rounds(parent_id)

    @contextmanager
    def round(self, index: int, sparsity: float) -> Iterator[MetricSink]:
        """A run nested under the parent for one round; KILLED if a signal stopped it, FAILED
        if it raised."""
        client = mlflow.MlflowClient()
        child, status = self.earlier.get(index, ("", ""))
        self.rounds[index] = child = child or self._create(index, sparsity)
        if status == "FINISHED":
            yield NullSink()
            return
        if status:
            client.update_run(child, "RUNNING")
        try:
            yield MlflowSink(child, skip_until=last_logged_step(child) if status else -1)
        except InterruptedError:
            client.set_terminated(child, "KILLED")
            raise
        except BaseException:
            client.set_terminated(child, "FAILED")
            raise
        client.set_terminated(child, "FINISHED")

    def _create(self, index: int, sparsity: float) -> str:
        name = (
            f"{self.method}-round-{index}"
            if self.method == "imp"
            else f"{self.method}-{sparsity:.2f}"
        )
        client = mlflow.MlflowClient()
        parent = client.get_run(self.parent_id)
        tags = {
            "mlflow.parentRunId": self.parent_id,
            Tag.ENTRY_POINT: FIND_MASK_ROUND,
            Tag.ROUND: str(index),
            Tag.SPARSITY: f"{sparsity:.6g}",
            Tag.METHOD: self.method,
        }
        child = client.create_run(
            parent.info.experiment_id, run_name=name, tags=resolve_tags(tags)
        ).info.run_id
        client.log_batch(
            child, params=[Param("round", str(index)), Param("round_sparsity", str(sparsity))]
        )
        return child

    def _sidecar(self, ticket: Ticket, kind: str, path: Path) -> dict[str, Any]:
        report = sparsity_report(ticket.mask)
        return {
            "kind": kind,
            "method": self.method,
            "sparsity_target": ticket.sparsity,
            "sparsity": report["overall"],
            "per_layer": {k: v for k, v in report.items() if k != "overall"},
            "per_role": role_sparsity(ticket.mask),
            "source_game": self.config.game,
            "algo": self.config.agent.algo,
            "encoder": self.config.agent.encoder,
            "seed": self.config.seed,
            "scope": self.config.sparsity.scope,
            "allocation": self.config.sparsity.allocation,
            "rewind_step": self.config.sparsity.imp_rewind_step,
            "round": ticket.round_index,
            "round_run_id": self.rounds.get(ticket.round_index, ""),
            "source_run_id": self.parent_id,
            "architecture": architecture_fingerprint(flat_weights(ticket.trained_weights)),
            "mask_hash": content_hash(ticket.mask),
            "content_hash": file_hash(path),
        }

    def on_ticket(self, ticket: Ticket) -> None:
        folder = self.scratch / sparsity_folder(ticket.sparsity)
        folder.mkdir(parents=True, exist_ok=True)
        save_mask(ticket.mask, folder / MASK)
        torch.save(ticket.ticket_weights, folder / TICKET)
        torch.save(ticket.trained_weights, folder / TRAINED)
        torch.save(ticket.rewind_weights, folder / REWIND)
        for kind in ("mask", "ticket", "trained", "rewind"):
            sidecar = self._sidecar(ticket, kind, folder / f"{kind}.pt")
            (folder / f"{kind}.json").write_text(json.dumps(sidecar, indent=2))
        client = mlflow.MlflowClient()
        client.log_artifacts(self.parent_id, str(folder), folder.name)
        final = ticket.eval_history[-1]["scores"] if ticket.eval_history else []
        row = {
            "sparsity_target": ticket.sparsity,
            "sparsity": sparsity_report(ticket.mask)["overall"],
            "sparsity_per_role": role_sparsity(ticket.mask),
            "round": ticket.round_index,
            "round_run_id": self.rounds.get(ticket.round_index, ""),
            "artifact_dir": folder.name,
            "final_eval_mean": float(np.mean(final)) if final else None,
            "final_eval_iqm": interquartile_mean(np.asarray(final)) if final else None,
        }
        if self.previous_mask is not None:
            # How much of the previous level's subnetwork survives (Jaccard of kept sets).
            row["overlap_previous_level"] = overlap(ticket.mask, self.previous_mask)["overall"]
        self.previous_mask = ticket.mask
        self.summary.append(row)
        client.log_dict(self.parent_id, self.summary, TICKETS)
        step = round(ticket.sparsity * 1000)
        values = {"ticket/sparsity": row["sparsity"]}
        if "overlap_previous_level" in row:
            values["ticket/overlap_previous_level"] = row["overlap_previous_level"]
        if final:
            values["ticket/final_eval_mean"] = row["final_eval_mean"]
            values["ticket/final_eval_iqm"] = row["final_eval_iqm"]
        logged = client.get_metric_history(self.parent_id, "ticket/sparsity")
        if any(m.step == step for m in logged):
            return  # logged by this run before it was interrupted (one batch: all or none)
        now = int(time.time() * 1000)
        client.log_batch(
            self.parent_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()]
        )


def earlier_rounds(parent_id: str) -> dict[int, tuple[str, str]]:
    """``{round index: (run id, status)}`` of the round runs a find-mask run has already."""
    client = mlflow.MlflowClient()
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs(
        [experiment],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_id}' "
            f"and tags.`{Tag.ENTRY_POINT}` = '{FIND_MASK_ROUND}'"
        ),
        order_by=["attributes.start_time ASC"],
    )
    return {int(r.data.tags[Tag.ROUND]): (r.info.run_id, r.info.status) for r in runs}
