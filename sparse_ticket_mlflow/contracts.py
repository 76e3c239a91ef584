"""The contracts between runs, declared once: entry points, their parameters, tags and artifacts.

Every run an entry point opens is found again by its tags and read through its artifacts: a
``find-mask`` run reads the ``train-dense`` run's ``checkpoints/init.pt``, a ``transfer`` run
reads ``sparsity_0.80/mask.pt`` by a ``runs:/`` URI, ``evaluate`` groups runs by their lineage
tags, the study driver finds a finished node by its ``node_key``. Those keys and paths are
spelled here and nowhere else; the modules that write or read them import these names.

Where a study goes: the experiment the user chose (``mlflow run -e main --experiment-name`` or
``--experiment-id``, ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID``, ``slurm submit
--experiment``), else, and whenever the choice is ``Default`` (id 0, where ``mlflow run`` puts a
run nobody placed), the experiment named after the study (``demo``), created on first use; one
rule for ``main`` and ``slurm submit`` (:func:`sparse_ticket_mlflow.node_runs.study_experiment`).
``mlflow run -e main`` without a choice leaves its own run in ``Default`` as a pointer: tags
``study_experiment`` and ``study_run`` (the parent's id) and a note; the parent and every node
run are in the study's experiment, where a re-run finds its finished nodes again.

What one study leaves in the tracking store (tag keys without the ``sparse_ticket.`` prefix)::

    the experiment  tags               mlflow.experimentKind=custom_model_development (the UI
                                       opens it on its runs table, not the GenAI overview),
                                       mlflow.sharedViewState.<study key> (the study's view:
                                       its node runs, flat, with their condition columns)
    main            run "study demo"   entry_point=main, study_key, code_version, study_filter
                                       (dry_run=true on a dry run; launcher=slurm, slurm_jobs)
                    artifacts          study/<name>.toml, study/dag.json, study/plan.txt
      a node run    (nested)           node, node_key, code_version, studies (+ its own tags),
                                       its condition (CONDITION_TAGS: algo, source_game,
                                       target_game, method, level, weights, adapt, seed;
                                       those that apply to its stage)
                    artifacts          logs/<node>.log (its output, when the driver ran it)
    train-dense     tags               entry_point=train-dense, checkpoint_dir
                    artifacts          config.json, checkpoints/init.pt, checkpoints/final.pt,
                                       checkpoints/step_<k>.pt (late rewinding),
                                       checkpoints/latest/ (the newest checkpoint, no replay)
    find-mask       tags               entry_point=find-mask, method, sparsities, dense_run,
                                       template (random masks), checkpoint_dir
                    artifacts          request.json, tickets.json,
                                       sparsity_0.60/{mask,ticket,trained,rewind}.pt
                                       and a .json sidecar beside each
      a round run   (nested)           entry_point=find-mask/round, round, sparsity, method
    transfer        tags               entry_point=transfer, target_game, algo, source_run_id,
                                       source_game, mask_method, mask_uri, weights, adapt,
                                       baseline, condition, mask_sparsity, sparsity,
                                       checkpoint_dir
                    artifacts          as train-dense
    evaluate        tags               entry_point=evaluate
                    artifacts          evaluation/ (conditions.csv, conditions.md, figures)

Every training run also carries the provenance tags of
:func:`sparse_ticket_mlflow.tracking.provenance_tags` (``git_commit``, ``git_dirty``,
``version.<package>``).

Every entry point's parameters, with their defaults, help and allowed values, are
:data:`PARAMETERS`: the command line's options (``sparse_ticket_mlflow/cli.py``) and the request
types (:func:`request_type`) are made from it, and ``tests/test_contracts.py`` checks ``MLproject``
against it. Parameters are strings on purpose: MLflow does not validate int/float types, the
entry point does (one clear line and exit code 2 on bad input).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, make_dataclass, replace

from sparse_ticket.agents.population import BATCHING
from sparse_ticket.config import ALGOS, ALLOCATIONS, SCOPES
from sparse_ticket.lottery import RANDOM_WEIGHTS, TICKET_METHODS
from sparse_ticket.stats.area_ratios import AGGREGATES
from sparse_ticket.transfer import ADAPT_REGIMES, BASELINES, WEIGHT_MODES

# ------------------------------------------------------------------------------ entry points
MAIN = "main"
TRAIN_DENSE = "train-dense"
FIND_MASK = "find-mask"
FIND_MASK_ROUND = "find-mask/round"
TRANSFER = "transfer"
EVALUATE = "evaluate"
TRAIN_MEMBERS = "train-members"
SLURM_SUBMIT = "slurm submit"  # the cluster launcher: a command, not an MLproject entry point

MLPROJECT_ENTRY_POINTS = (MAIN, TRAIN_DENSE, FIND_MASK, TRANSFER, EVALUATE)
"""The entry points of the ``MLproject`` file. ``train-members`` (the launchers pack runs with it)
and ``slurm submit`` are commands of ``python -m sparse_ticket_mlflow`` only."""
# Single-run entry points that train from a checkpoint when resumed.
RESUMABLE = (TRAIN_DENSE, TRANSFER)
# Chains of rounds: run again, they continue from their last finished round, and inside the
# round from its checkpoint (sparse_ticket.lottery.train_round).
RESUMABLE_CHAINS = (FIND_MASK,)

# ------------------------------------------------------------------------------ tags
TAG_PREFIX = "sparse_ticket."


class Tag:
    """Tag keys (``sparse_ticket.<name>``), grouped by who writes them."""

    # every run of ours
    ENTRY_POINT = TAG_PREFIX + "entry_point"
    CHECKPOINT_DIR = TAG_PREFIX + "checkpoint_dir"
    MALLOC_TUNED = TAG_PREFIX + "malloc_tuned"  # glibc tuning in force (sparse_ticket.malloc)
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
    # a node's condition, set by the study driver when it creates the node run (CONDITION_TAGS)
    LEVEL = TAG_PREFIX + "level"  # the study's sparsity level (0.80), as in the node id
    SEED = TAG_PREFIX + "seed"
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
    # the run `mlflow run -e main` leaves in Default: where the study went
    STUDY_EXPERIMENT = TAG_PREFIX + "study_experiment"
    STUDY_RUN = TAG_PREFIX + "study_run"
    # provenance (sparse_ticket_mlflow.tracking)
    GIT_COMMIT = TAG_PREFIX + "git_commit"
    GIT_DIRTY = TAG_PREFIX + "git_dirty"
    VERSION = TAG_PREFIX + "version."  # + package name


CONDITION_TAGS = {
    "algo": Tag.ALGO,
    "source": Tag.SOURCE_GAME,
    "target": Tag.TARGET_GAME,
    "method": Tag.METHOD,
    "level": Tag.LEVEL,
    "weights": Tag.WEIGHTS,
    "adapt": Tag.ADAPT,
    "seed": Tag.SEED,
}
"""A node's condition field -> its tag, the columns to group and compare a study's runs by.

Which fields a node has depends on its stage (:attr:`sparse_ticket_mlflow.dag.Node.condition`)::

    dense      algo, source = target = game, method=dense, level=0.00, seed
    mask       algo, source = game, method (imp, gmp, random), seed; random also level
    transfer   algo, source, target, method (of its mask), level (of its mask), weights, adapt,
               seed
    baseline   algo, target, method=baseline-<name> (dense, gmp, ...), level (0.00 for dense),
               adapt=none, seed
    evaluate   none

The entry points write some of these tags too, with the same values (a transfer's
``target_game``, ``algo``, ``weights``, ``adapt``; a find-mask run's ``method``). ``level`` is the
grid's level; the realised sparsities are ``sparsity`` and ``mask_sparsity``."""

# MLflow's own tags that a packed member run sets as `mlflow run` would.
MLFLOW_ENTRY_POINT = "mlflow.project.entryPoint"
MLFLOW_SOURCE_TYPE = "mlflow.source.type"
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_NOTE = "mlflow.note.content"  # a run's description, shown (markdown) on its page
# MLflow's experiment tags that the UI reads.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""The kind of every experiment a study goes to: the UI opens it on its runs table (without
it, the UI of MLflow 3 opens an experiment it cannot classify on its GenAI overview)."""
SHARED_VIEW = "mlflow.sharedViewState."  # + a key: a saved runs-table view (JSON)
SHARED_VIEW_PARAM = "viewStateShareKey"  # the UI's URL parameter that opens a saved view
WORKFLOW_PARAM = "workflowType"  # the UI's URL parameter of its GenAI / Model training switch
MODEL_TRAINING_WORKFLOW = "machine_learning"
"""The switch's side for a study: the UI of MLflow 3.17 starts on GenAI (its own default, kept in
the browser) and opens any experiment on the GenAI overview there, whatever its kind."""
DEFAULT_EXPERIMENT_ID = "0"


# ------------------------------------------------------------------------------ artifacts
CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
INIT_WEIGHTS = "init.pt"  # under CHECKPOINTS
FINAL_WEIGHTS = "final.pt"  # under CHECKPOINTS
LATEST_CHECKPOINT = f"{CHECKPOINTS}/latest"
TICKETS = "tickets.json"  # a find-mask run's summary, one row per level
FIND_REQUEST = "request.json"  # a find-mask run's parameters (what --resume rebuilds it from)
MASK = "mask.pt"
TICKET = "ticket.pt"
TRAINED = "trained.pt"
REWIND = "rewind.pt"
EVALUATION = "evaluation"
STUDY = "study"
DAG = f"{STUDY}/dag.json"
PLAN = f"{STUDY}/plan.txt"
NODE_LOGS = "logs"  # a node run's captured stdout/stderr, as the study driver logs them


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


# -------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Param:
    """One parameter of an entry point: ``--total-steps`` on the command line, ``total_steps``
    in ``MLproject`` and in the request type."""

    name: str
    """The Python and ``MLproject`` name (``total_steps``)."""
    default: str | tuple[str, ...] = ""
    """The default, as the user would type it (a tuple for a repeatable option)."""
    help: str = ""
    """One line for ``--help``."""
    choices: tuple[str, ...] | Callable[[], Sequence[str]] = ()
    """The allowed values (the library's own list, never a copy), listed in ``--help``; the
    entry point checks them (one line, exit 2). A callable is read when the help is shown."""
    required: bool = False
    """No default: the user must give it (``evaluate --study``)."""
    multiple: bool = False
    """Repeatable on the command line (``slurm submit --sbatch``)."""
    cli_only: bool = False
    """Set on this machine's command line only, absent from ``MLproject`` (a checkpoint
    directory of this machine)."""

    @property
    def flag(self) -> str:
        """The command-line option: ``--total-steps``."""
        return "--" + self.name.replace("_", "-")

    def help_text(self) -> str:
        """``help`` with the allowed values appended."""
        choices = self.choices() if callable(self.choices) else self.choices
        if not choices:
            return self.help
        return f"{self.help} One of: {', '.join(choices)}.".strip()


def _presets() -> Sequence[str]:
    from sparse_ticket_mlflow.presets import preset_names  # reads the preset folder

    return preset_names()


def _study_presets() -> Sequence[str]:
    from sparse_ticket_mlflow.presets import study_preset_names

    return study_preset_names()


CONTAINERS = ("singularity", "apptainer", "none")
"""How ``slurm submit`` runs a task: ``exec --nv IMAGE`` in Singularity or Apptainer, or in this
Python environment."""

_GAME = Param("game", "pong", "ALE game (snake_case) or MinAtar game.")
_ALGO = Param("algo", "ddqn", "The agent.", ALGOS)
_SEED = Param("seed", "0", "Non-negative integer seed.")
_TOTAL_STEPS = Param("total_steps", "", "Agent steps (default: the preset's).")
_PRESET = Param("preset", "default", "A run preset.", _presets)
_OVERRIDES = Param("overrides", "", 'Config overrides, e.g. "lr=1e-4 target_update=8000".')
_RESUME = Param("resume", "", "Run id to continue from its last complete checkpoint.")
_CHECKPOINT_DIR = Param(
    "checkpoint_dir",
    "",
    "Root of local checkpoints (default: $SPARSE_TICKET_CHECKPOINT_DIR or ./st_checkpoints).",
    cli_only=True,
)
_MEMBERS_PER_TASK = Param(
    "members_per_task",
    "",
    "Pack up to K runs of one shape (seeds) into one process, trained as one population "
    "(default: the preset's; 1 unless it says).",
)
_TRAIN = (_GAME, _ALGO, _SEED, _TOTAL_STEPS, _PRESET, _OVERRIDES)

PARAMETERS: dict[str, tuple[Param, ...]] = {
    TRAIN_DENSE: (*_TRAIN, _RESUME, _CHECKPOINT_DIR),
    TRAIN_MEMBERS: (
        Param("runs", "", "Comma-separated ids of pre-created train-dense/transfer runs."),
        Param(
            "batching",
            "auto",
            "loop (bit-identical to training alone), vmap (stacked; the GPU's) or auto.",
            BATCHING,
        ),
        _CHECKPOINT_DIR,
    ),
    FIND_MASK: (
        Param("method", "imp", "How masks are found.", TICKET_METHODS),
        replace(_GAME, help="The source game."),
        _ALGO,
        Param(
            "sparsities",
            "0.6,0.7,0.8",
            "Comma-separated sparsity levels; one IMP chain passes through all of them.",
        ),
        Param("scope", "encoder", "What is pruned.", SCOPES),
        Param("allocation", "global", "How the sparsity is spread over layers.", ALLOCATIONS),
        _SEED,
        replace(_TOTAL_STEPS, help="Agent steps per training round."),
        _PRESET,
        replace(_OVERRIDES, help='Config overrides, e.g. "imp_prune_fraction=0.1".'),
        Param("dense_run", "", "runs:/<id> of a train-dense run to start from."),
        Param(
            "template",
            "",
            "random: runs:/.../mask.pt whose per-layer densities the random mask copies.",
        ),
        Param(
            "random_weights",
            "ticket",
            "random with a template: start from its ticket weights or reinit.",
            RANDOM_WEIGHTS,
        ),
        replace(
            _RESUME,
            help="Run id to continue from its last finished round (and inside the "
            "round from its checkpoint).",
        ),
        _CHECKPOINT_DIR,
    ),
    TRANSFER: (
        Param("mask", "", "runs:/<find-mask run>/sparsity_<s>/mask.pt to transfer."),
        Param("weights", "ticket", "The encoder weights the target starts from.", WEIGHT_MODES),
        replace(_GAME, help="The target game."),
        _ALGO,
        Param("adapt", "none", "The sparsity regime on the target.", tuple(ADAPT_REGIMES)),
        Param("final_sparsity", "", "adapt=gmp: the sparsity to prune on to."),
        Param("baseline", "", "Instead of a transfer: a baseline on the target alone.", BASELINES),
        _SEED,
        _TOTAL_STEPS,
        _PRESET,
        replace(_OVERRIDES, help="Config overrides."),
        _RESUME,
        _CHECKPOINT_DIR,
    ),
    EVALUATE: (
        Param(
            "study",
            help="An experiment name, a parent run id, or a search_runs filter string.",
            required=True,
        ),
        Param("output_dir", "", "Where tables and figures go (default ./evaluation/<run id>)."),
        Param("reps", "10000", "Bootstrap repetitions."),
        Param("seed", "0", "Bootstrap seed."),
        Param("baselines", "dense", "Comma-separated baselines for area ratios.", BASELINES),
        Param("aggregate", "iqm", "Curve aggregate over seeds for area ratios.", AGGREGATES),
    ),
    MAIN: (
        Param("preset", "demo", "A study preset.", _study_presets),
        Param("workers", "2", "Nodes run at once, each a process; the cores are shared."),
        Param("dry_run", "false", "true: print the DAG only."),
        Param("output_dir", "studies", "Where <preset>/evaluation and <preset>/logs go."),
        Param(
            "steps_per_sec",
            "",
            "Agent steps/s per run for the dry run's GPU-hour estimate (default: the preset's).",
        ),
        _MEMBERS_PER_TASK,
    ),
    SLURM_SUBMIT: (
        Param("preset", "paper", "A study preset or file."),
        Param("container", "singularity", "How a task runs.", CONTAINERS),
        Param("image", "", "The .sif image (docker/build-sif.sh)."),
        Param("experiment", "", "MLflow experiment (default: the study's name)."),
        Param("partition", "", "#SBATCH --partition."),
        Param("account", "", "#SBATCH --account."),
        Param("gpus", "1", "GPUs per task (0: none)."),
        Param("cpus_per_task", "4", "CPUs per task."),
        Param("mem", "32G", "Memory per task."),
        Param("time", "24:00:00", "Time limit per task."),
        Param(
            "signal_seconds",
            "300",
            "SIGTERM this long before the time limit: checkpoint, requeue, resume (0: off).",
        ),
        Param("max_running", "", "At most this many tasks of an array at once."),
        Param("sbatch", (), 'Extra #SBATCH line, e.g. "--qos=long" (repeatable).', multiple=True),
        Param("jobs_dir", "slurm_jobs", "Scripts and logs."),
        Param("checkpoint_dir", "", "Checkpoints on a shared filesystem."),
        Param("dry_run", "false", "true: write, don't submit."),
        _MEMBERS_PER_TASK,
    ),
}
"""Every entry point's parameters, in the order ``--help`` lists them."""


def defaults(entry_point: str) -> dict[str, str | tuple[str, ...]]:
    """``{name: default}`` of ``entry_point``'s parameters (required ones left out)."""
    return {p.name: p.default for p in PARAMETERS[entry_point] if not p.required}


def request_type(name: str, entry_point: str, base: type | None = None) -> type:
    """A dataclass of ``entry_point``'s parameters as the user gave them (strings, validated by
    the entry point), each field defaulting as :data:`PARAMETERS` says.

    With ``base``, the new type extends it (a transfer request is a training request), and a
    field ``base`` already has keeps its place.
    """
    fields = [
        (p.name, tuple[str, ...] if p.multiple else str, field(default=p.default))
        for p in PARAMETERS[entry_point]
        if not p.required
    ]
    bases = (base,) if base is not None else ()
    doc = f"The ``{entry_point}`` parameters as the user gave them (``contracts.PARAMETERS``)."
    return make_dataclass(name, fields, bases=bases, namespace={"__doc__": doc})
