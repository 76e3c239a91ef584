"""The contracts between runs, declared once: entry-point names, tag keys and artifact paths.

Every run an entry point opens is found again by its tags and read through its artifacts: a
``find-mask`` run reads the ``train-dense`` run's ``checkpoints/init.pt``, a ``transfer`` run
reads ``sparsity_0.80/mask.pt`` by a ``runs:/`` URI, ``evaluate`` groups runs by their lineage
tags, the study driver finds a finished node by its ``node_key``. Those keys and paths are
spelled here and nowhere else; the modules that write or read them import these names.

What one study leaves in the tracking store (tag keys without the ``sparse_ticket.`` prefix)::

    main            run "study demo"   entry_point=main, study_key, code_version, study_filter
                                       (dry_run=true on a dry run; launcher=slurm, slurm_jobs)
                    artifacts          study/<name>.toml, study/dag.json, study/plan.txt
      a node run    (nested)           node, node_key, code_version, studies (+ its own tags)
    train-dense     tags               entry_point=train-dense, checkpoint_dir
                    artifacts          config.json, checkpoints/init.pt, checkpoints/final.pt,
                                       checkpoints/step_<k>.pt (late rewinding),
                                       checkpoints/latest/ (the newest checkpoint, no replay)
    find-mask       tags               entry_point=find-mask, method, sparsities, dense_run,
                                       template (random masks), checkpoint_dir
                    artifacts          tickets.json, sparsity_0.60/{mask,ticket,trained,rewind}.pt
                                       and a .json sidecar beside each
      a round run   (nested)           entry_point=find-mask/round, round, sparsity, method
    transfer        tags               entry_point=transfer, target_game, algo, source_run_id,
                                       source_game, mask_method, mask_uri, weights, adapt,
                                       baseline, condition, mask_sparsity, sparsity,
                                       checkpoint_dir
                    artifacts          as train-dense
    evaluate        tags               entry_point=evaluate
                    artifacts          evaluation/ (conditions.csv, conditions.md, figures)

Every training run also carries the provenance tags of :func:`mlproject.tracking.provenance_tags`
(``git_commit``, ``git_dirty``, ``version.<package>``).
"""

from __future__ import annotations

# ------------------------------------------------------------------------------ entry points
MAIN = "main"
TRAIN_DENSE = "train-dense"
FIND_MASK = "find-mask"
FIND_MASK_ROUND = "find-mask/round"
TRANSFER = "transfer"
EVALUATE = "evaluate"
TRAIN_MEMBERS = "train-members"
# Single-run entry points that train from a checkpoint when resumed.
RESUMABLE = (TRAIN_DENSE, TRANSFER)

# ------------------------------------------------------------------------------ tags
TAG_PREFIX = "sparse_ticket."


class Tag:
    """Tag keys (``sparse_ticket.<name>``), grouped by who writes them."""

    # every run of ours
    ENTRY_POINT = TAG_PREFIX + "entry_point"
    CHECKPOINT_DIR = TAG_PREFIX + "checkpoint_dir"
    # lineage of a transfer (and of a baseline, which has no source)
    ALGO = TAG_PREFIX + "algo"
    TARGET_GAME = TAG_PREFIX + "target_game"
    SOURCE_GAME = TAG_PREFIX + "source_game"
    SOURCE_RUN_ID = TAG_PREFIX + "source_run_id"
    MASK_METHOD = TAG_PREFIX + "mask_method"
    MASK_URI = TAG_PREFIX + "mask_uri"
    WEIGHTS = TAG_PREFIX + "weights"
    ADAPT = TAG_PREFIX + "adapt"
    BASELINE = TAG_PREFIX + "baseline"
    CONDITION = TAG_PREFIX + "condition"
    MASK_SPARSITY = TAG_PREFIX + "mask_sparsity"  # of the mask the run started from
    SPARSITY = TAG_PREFIX + "sparsity"  # the run's final sparsity
    # find-mask and its rounds
    METHOD = TAG_PREFIX + "method"
    SPARSITIES = TAG_PREFIX + "sparsities"
    DENSE_RUN = TAG_PREFIX + "dense_run"
    TEMPLATE = TAG_PREFIX + "template"
    ROUND = TAG_PREFIX + "round"
    # a study and its nodes
    STUDY_KEY = TAG_PREFIX + "study_key"
    STUDY_FILTER = TAG_PREFIX + "study_filter"
    STUDIES = TAG_PREFIX + "studies"
    NODE = TAG_PREFIX + "node"
    NODE_KEY = TAG_PREFIX + "node_key"
    CODE_VERSION = TAG_PREFIX + "code_version"
    DRY_RUN = TAG_PREFIX + "dry_run"
    LAUNCHER = TAG_PREFIX + "launcher"
    SLURM_JOBS = TAG_PREFIX + "slurm_jobs"
    # provenance (mlproject.tracking)
    GIT_COMMIT = TAG_PREFIX + "git_commit"
    GIT_DIRTY = TAG_PREFIX + "git_dirty"
    VERSION = TAG_PREFIX + "version."  # + package name


# MLflow's own tags that a packed member run sets as `mlflow run` would.
MLFLOW_ENTRY_POINT = "mlflow.project.entryPoint"
MLFLOW_SOURCE_TYPE = "mlflow.source.type"


# ------------------------------------------------------------------------------ artifacts
CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
INIT_WEIGHTS = "init.pt"  # under CHECKPOINTS
FINAL_WEIGHTS = "final.pt"  # under CHECKPOINTS
LATEST_CHECKPOINT = f"{CHECKPOINTS}/latest"
TICKETS = "tickets.json"  # a find-mask run's summary, one row per level
MASK = "mask.pt"
TICKET = "ticket.pt"
TRAINED = "trained.pt"
REWIND = "rewind.pt"
EVALUATION = "evaluation"
STUDY = "study"
DAG = f"{STUDY}/dag.json"
PLAN = f"{STUDY}/plan.txt"


def checkpoint_weights(name: str) -> str:
    """``checkpoints/<name>``: ``init.pt``, ``final.pt`` or ``step_<k>.pt``."""
    return f"{CHECKPOINTS}/{name}"


def rewind_file(step: int) -> str:
    """The file of the rewind point at agent step ``step``: ``init.pt``, else ``step_<k>.pt``."""
    return INIT_WEIGHTS if step == 0 else f"step_{step}.pt"


def sparsity_folder(sparsity: float) -> str:
    """A find-mask level's folder: ``sparsity_0.60``."""
    return f"sparsity_{sparsity:.2f}"


def run_uri(run_id: str, path: str) -> str:
    """``runs:/<run id>/<path>``."""
    return f"runs:/{run_id}/{path}"
