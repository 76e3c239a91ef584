"""Named random streams of one run: every source of randomness gets its own seed.

A run's master seed ``TrainConfig.seed`` is never used directly. Each consumer derives an
independent 32-bit seed from it and the stream's name (``numpy.random.SeedSequence``), so adding
a draw to one stream never shifts another:

================  =================================================================
stream            what it seeds
================  =================================================================
``init`` / role   the initial weights: one stream per network role (``q``, ``v``),
                  ``derive_seed(derive_seed(seed, config.init_stream), role)``
``reinit``        the re-initialisation controls' weights (``TrainConfig.init_stream``)
``train-env``     training episodes; ``eval-env`` / ``eval-act``: evaluation
``explore``       epsilon-greedy exploration; ``replay``: batch sampling
``sparsity``      random masks and SET regrowth; ``probe``: the plasticity probe batch
================  =================================================================

Per-role init streams make each network's initial weights a function of the seed and the role
only: DQV's V network no longer depends on the size of Q's head, which differs between games
(docs/protocol.md, "Initialisation and the re-initialisation control").
"""

from __future__ import annotations

import numpy as np


def derive_seed(seed: int, *words: int | str) -> int:
    """An independent 32-bit seed for one named stream (env, eval, exploration, replay) of a run."""
    ints = [seed] + [
        w if isinstance(w, int) else int.from_bytes(w.encode(), "little") for w in words
    ]
    return int(np.random.SeedSequence(ints).generate_state(1)[0])
