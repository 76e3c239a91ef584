"""Tests of :class:`FrameReplay`: exact stack reconstruction, validity, uniformity, persistence.

Frames are tiny and constant (every pixel of the frame written at a step holds that step's tag),
so a sampled observation is identified by its frames' tags, and each expected stack below is
written out by hand: ``0`` marks a zero-padded frame.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_ticket.replay import FrameReplay, ReplayBatch

FRAME = (2, 2)

# Transition as sampled: (obs tags, action, reward, next_obs tags, terminal).
Row = tuple[tuple[int, ...], int, float, tuple[int, ...], float]


def frames_of(tags: list[int], shape: tuple[int, ...] = FRAME) -> np.ndarray:
    """``(len(tags), *shape)`` uint8 frames, frame ``i`` filled with ``tags[i]``."""
    return np.stack([np.full(shape, t, dtype=np.uint8) for t in tags])


def reset(buf: FrameReplay, tags: list[int | None]) -> None:
    """``add_reset`` for the envs whose tag is not None."""
    mask = np.array([t is not None for t in tags])
    buf.add_reset(mask, frames_of([t or 0 for t in tags]))


def step(
    buf: FrameReplay,
    tags: list[int],
    terminals: list[bool] | None = None,
    actions: list[int] | None = None,
) -> None:
    """``add_step`` for all envs; the reward of each env is its s' tag / 10, its action tag % 7."""
    n = len(tags)
    buf.add_step(
        np.array(actions if actions is not None else [t % 7 for t in tags]),
        np.array([t / 10 for t in tags], dtype=np.float32),
        np.array(terminals if terminals is not None else [False] * n),
        frames_of(tags),
    )


def stack_tags(obs: torch.Tensor) -> tuple[int, ...]:
    """Tags of a ``(stack, H, W)`` observation, checking every frame is constant."""
    flat = obs.reshape(obs.shape[0], -1)
    assert (flat == flat[:, :1]).all(), "a frame mixes pixels of different steps"
    return tuple(int(v) for v in flat[:, 0])


def rows_of(batch: ReplayBatch) -> list[Row]:
    """The batch as hashable rows of tags and scalars."""
    return [
        (
            stack_tags(batch.obs[i]),
            int(batch.actions[i]),
            round(float(batch.rewards[i]), 4),
            stack_tags(batch.next_obs[i]),
            float(batch.terminals[i]),
        )
        for i in range(batch.obs.shape[0])
    ]


def sampled(buf: FrameReplay, n: int = 4000) -> Counter[Row]:
    """How often each distinct transition appears in ``n`` samples."""
    return Counter(rows_of(buf.sample(n)))


def expected(obs: tuple[int, ...], nxt: tuple[int, ...], terminal: bool = False) -> Row:
    """The row of a transition in the ``step`` convention (action, reward from the s' tag)."""
    return (obs, nxt[-1] % 7, round(nxt[-1] / 10, 4), nxt, float(terminal))


def assert_holds_exactly(buf: FrameReplay, rows: list[Row], n: int = 4000) -> Counter[Row]:
    """Every expected transition is sampled, nothing else is, and ``len`` agrees."""
    counts = sampled(buf, n)
    assert set(counts) == set(rows)
    assert len(buf) == len(rows)
    return counts


# ---------------------------------------------------------------------------- single episode


def test_midepisode_stacks_and_zero_padding_after_reset() -> None:
    buf = FrameReplay(capacity=100, num_envs=1, frame_shape=FRAME, stack=4, seed=0)
    reset(buf, [1])
    for tag in (2, 3, 4, 5, 6):
        step(buf, [tag])
    assert_holds_exactly(
        buf,
        [
            expected((0, 0, 0, 1), (0, 0, 1, 2)),
            expected((0, 0, 1, 2), (0, 1, 2, 3)),
            expected((0, 1, 2, 3), (1, 2, 3, 4)),
            expected((1, 2, 3, 4), (2, 3, 4, 5)),
            expected((2, 3, 4, 5), (3, 4, 5, 6)),
        ],
    )


def test_terminal_transition_and_no_start_at_final_frame() -> None:
    buf = FrameReplay(capacity=100, num_envs=1, frame_shape=FRAME, stack=4, seed=1)
    reset(buf, [1])
    step(buf, [2])
    step(buf, [3], terminals=[True])
    reset(buf, [4])  # the next episode must not see frames 1..3
    step(buf, [5])
    step(buf, [6])
    assert_holds_exactly(
        buf,
        [
            expected((0, 0, 0, 1), (0, 0, 1, 2)),
            expected((0, 0, 1, 2), (0, 1, 2, 3), terminal=True),
            # No transition starts at the final frame 3: ((0, 1, 2, 3), ...) is absent.
            expected((0, 0, 0, 4), (0, 0, 4, 5)),
            expected((0, 0, 4, 5), (0, 4, 5, 6)),
        ],
    )


def test_truncation_is_not_terminal_and_final_frame_is_not_a_start() -> None:
    buf = FrameReplay(capacity=100, num_envs=1, frame_shape=FRAME, stack=3, seed=2)
    reset(buf, [1])
    step(buf, [2])
    step(buf, [3], terminals=[False])  # time limit: the runner resets without a terminal
    reset(buf, [7])
    step(buf, [8])
    assert_holds_exactly(
        buf,
        [
            expected((0, 0, 1), (0, 1, 2)),
            expected((0, 1, 2), (1, 2, 3), terminal=False),
            expected((0, 0, 7), (0, 7, 8)),
        ],
    )


def test_back_to_back_one_step_episodes() -> None:
    buf = FrameReplay(capacity=100, num_envs=1, frame_shape=FRAME, stack=4, seed=3)
    for first, final in ((1, 2), (3, 4), (5, 6)):
        reset(buf, [first])
        step(buf, [final], terminals=[True])
    assert_holds_exactly(
        buf, [expected((0, 0, 0, f), (0, 0, f, f + 1), terminal=True) for f in (1, 3, 5)]
    )


# ---------------------------------------------------------------------------- several envs


def test_two_envs_out_of_lockstep() -> None:
    buf = FrameReplay(capacity=100, num_envs=2, frame_shape=FRAME, stack=3, seed=4)
    reset(buf, [10, 100])
    step(buf, [11, 101], terminals=[True, False])
    reset(buf, [20, None])  # env 0 is now one write ahead of env 1
    step(buf, [21, 102])
    step(buf, [22, 103], terminals=[False, True])
    reset(buf, [None, 200])
    step(buf, [23, 201])
    assert_holds_exactly(
        buf,
        [
            expected((0, 0, 10), (0, 10, 11), terminal=True),
            expected((0, 0, 20), (0, 20, 21)),
            expected((0, 20, 21), (20, 21, 22)),
            expected((20, 21, 22), (21, 22, 23)),
            expected((0, 0, 100), (0, 100, 101)),
            expected((0, 100, 101), (100, 101, 102)),
            expected((100, 101, 102), (101, 102, 103), terminal=True),
            expected((0, 0, 200), (0, 200, 201)),
        ],
    )


def test_envs_with_own_actions() -> None:
    buf = FrameReplay(capacity=100, num_envs=2, frame_shape=FRAME, stack=2, seed=5)
    reset(buf, [1, 2])
    step(buf, [3, 4], actions=[5, 17])
    counts = sampled(buf, 200)
    assert set(counts) == {
        ((0, 1), 5, 0.3, (1, 3), 0.0),
        ((0, 2), 17, 0.4, (2, 4), 0.0),
    }


# ---------------------------------------------------------------------------- wrap-around


def test_wraparound_drops_transitions_whose_history_was_overwritten() -> None:
    # 6 slots; one episode of positions 0..10 holding tags 1..11. Slots keep positions 5..10
    # (tags 6..11): starts at tags 7..10 have their whole history, tag 6 lost its frame tag 5.
    buf = FrameReplay(capacity=6, num_envs=1, frame_shape=FRAME, stack=2, seed=6)
    reset(buf, [1])
    for tag in range(2, 12):
        step(buf, [tag])
    assert_holds_exactly(buf, [expected((t - 1, t), (t, t + 1)) for t in (7, 8, 9, 10)])


def test_wraparound_with_episode_boundary_and_uneven_envs() -> None:
    # capacity 11 over 2 envs -> 6 slots each; env 1 writes an extra reset frame.
    buf = FrameReplay(capacity=11, num_envs=2, frame_shape=FRAME, stack=3, seed=7)
    assert buf.capacity_per_env == 6
    reset(buf, [1, 101])
    for tag in range(2, 6):
        step(buf, [tag, 100 + tag], terminals=[False, tag == 5])
    reset(buf, [None, 150])
    for tag in range(6, 9):
        step(buf, [tag, 145 + tag])
    # env 0: positions 0..7 hold tags 1..8; slots keep positions 2..7, so starts p = 4..6.
    # env 1: positions 0..8 hold 101..105 (105 terminal), 150..153; slots keep positions 3..8,
    # so starts p = 5..7 (tags 150..152): the terminal transition 104 -> 105 at p = 3 is gone,
    # and 150's zero padding replaces 104 and 105, which are still stored.
    assert_holds_exactly(
        buf,
        [
            expected((3, 4, 5), (4, 5, 6)),
            expected((4, 5, 6), (5, 6, 7)),
            expected((5, 6, 7), (6, 7, 8)),
            expected((0, 0, 150), (0, 150, 151)),
            expected((0, 150, 151), (150, 151, 152)),
            expected((150, 151, 152), (151, 152, 153)),
        ],
    )


# ---------------------------------------------------------------------------- sampling


def test_sampling_is_uniform_over_valid_transitions() -> None:
    buf = FrameReplay(capacity=40, num_envs=2, frame_shape=FRAME, stack=2, seed=8)
    reset(buf, [1, 101])
    for tag in range(2, 9):
        step(buf, [tag, 100 + tag], terminals=[tag == 4, False])
        if tag == 4:
            reset(buf, [50, None])
    assert set(sampled(buf, 2000)) == {
        *(expected((0, 1), (1, 2)), expected((1, 2), (2, 3)), expected((2, 3), (3, 4), True)),
        *(expected(o, n) for o, n in (((0, 50), (50, 5)), ((50, 5), (5, 6)), ((5, 6), (6, 7)))),
        expected((6, 7), (7, 8)),
        *(expected((0 if t == 101 else t - 1, t), (t, t + 1)) for t in range(101, 108)),
    }
    assert len(buf) == 14  # 7 steps of 2 envs
    n = 70_000
    batch = buf.sample(n)
    # (obs newest tag, next_obs newest tag) identifies each of the 14 transitions.
    keys = torch.stack([batch.obs[:, -1, 0, 0], batch.next_obs[:, -1, 0, 0]], dim=1)
    _, counts = torch.unique(keys, dim=0, return_counts=True)
    assert counts.numel() == 14
    # Each transition has p = 1/14; 5 sigma of a binomial over 70k draws is < 0.005.
    np.testing.assert_allclose(counts.numpy() / n, 1 / 14, atol=0.005)


def test_sample_dtypes_and_shapes() -> None:
    buf = FrameReplay(capacity=50, num_envs=3, frame_shape=FRAME, stack=4, seed=9)
    reset(buf, [1, 2, 3])
    step(buf, [4, 5, 6])
    batch = buf.sample(7)
    assert batch.obs.shape == batch.next_obs.shape == (7, 4, 2, 2)
    assert batch.obs.dtype == batch.next_obs.dtype == torch.uint8
    assert batch.actions.shape == batch.rewards.shape == batch.terminals.shape == (7,)
    assert batch.actions.dtype == torch.int64
    assert batch.rewards.dtype == batch.terminals.dtype == torch.float32


def test_minatar_channels_first_frames_with_stack_one() -> None:
    shape = (3, 2, 2)
    buf = FrameReplay(capacity=20, num_envs=1, frame_shape=shape, stack=1, seed=10)
    first = np.arange(12, dtype=np.uint8).reshape(1, *shape)
    buf.add_reset(np.array([True]), first)
    buf.add_step(np.array([2]), np.array([1.5]), np.array([True]), first + 100)
    batch = buf.sample(5)
    assert batch.obs.shape == batch.next_obs.shape == (5, 3, 2, 2)
    assert buf.obs_shape == (3, 2, 2)
    assert torch.equal(batch.obs, torch.from_numpy(first).expand(5, *shape))
    assert torch.equal(batch.next_obs, torch.from_numpy(first + 100).expand(5, *shape))
    assert batch.terminals.tolist() == [1.0] * 5
    assert batch.rewards.tolist() == [1.5] * 5


def test_stacked_channels_first_frames_keep_frame_order() -> None:
    buf = FrameReplay(capacity=20, num_envs=1, frame_shape=(2, 1, 1), stack=2, seed=11)
    buf.add_reset(np.array([True]), np.array([[[[1]], [[2]]]], dtype=np.uint8))
    buf.add_step(
        np.array([0]), np.array([0.0]), np.array([False]), np.full((1, 2, 1, 1), 3, np.uint8)
    )
    batch = buf.sample(1)
    assert batch.obs.flatten().tolist() == [0, 0, 1, 2]
    assert batch.next_obs.flatten().tolist() == [1, 2, 3, 3]


def test_sample_errors_until_a_transition_is_complete() -> None:
    buf = FrameReplay(capacity=20, num_envs=2, frame_shape=FRAME, stack=4, seed=12)
    with pytest.raises(ValueError, match="no complete transition"):
        buf.sample(4)
    reset(buf, [1, 2])
    assert len(buf) == 0
    with pytest.raises(ValueError, match="no complete transition"):
        buf.sample(4)
    step(buf, [3, 4])
    assert len(buf) == 2
    with pytest.raises(ValueError, match="batch_size"):
        buf.sample(0)


def test_returned_frames_are_views_refilled_by_next_sample() -> None:
    buf = FrameReplay(capacity=20, num_envs=1, frame_shape=FRAME, stack=2, seed=13)
    reset(buf, [1])
    step(buf, [2])
    first = buf.sample(3)
    kept = first.obs.clone()
    second = buf.sample(3)
    assert second.obs.data_ptr() == first.obs.data_ptr()
    assert torch.equal(first.obs, kept)  # same content here, since only one transition exists


# ---------------------------------------------------------------------------- misuse


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="stack \\+ 1"):
        FrameReplay(capacity=8, num_envs=2, frame_shape=FRAME, stack=4, seed=0)
    with pytest.raises(ValueError, match="frame_shape"):
        FrameReplay(capacity=8, num_envs=1, frame_shape=(4,), stack=1, seed=0)
    buf = FrameReplay(capacity=20, num_envs=2, frame_shape=FRAME, stack=2, seed=0)
    with pytest.raises(RuntimeError, match="before add_reset"):
        step(buf, [1, 2])
    with pytest.raises(TypeError, match="uint8"):
        buf.add_reset(np.ones(2, bool), np.ones((2, *FRAME), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        buf.add_reset(np.ones(2, bool), np.ones((2, 3, 3), dtype=np.uint8))


def test_step_after_terminal_without_reset_is_an_error() -> None:
    buf = FrameReplay(capacity=20, num_envs=2, frame_shape=FRAME, stack=2, seed=0)
    reset(buf, [1, 2])
    step(buf, [3, 4], terminals=[False, True])
    with pytest.raises(RuntimeError, match=r"without add_reset \(envs \[1\]\)"):
        step(buf, [5, 6])


# ---------------------------------------------------------------------------- persistence, memory


def filled_buffer(seed: int) -> FrameReplay:
    """A small two-env buffer past wrap-around, with episode ends in both envs."""
    buf = FrameReplay(capacity=30, num_envs=2, frame_shape=FRAME, stack=3, seed=seed)
    rng = np.random.default_rng(123)
    reset(buf, [1, 2])
    for tag in range(3, 60):
        ends = rng.random(2) < 0.15
        step(buf, [tag, tag + 100], terminals=ends.tolist())
        if ends.any():
            reset(buf, [190 + tag if e else None for e in ends])
    return buf


def test_state_dict_round_trip_through_npz(tmp_path: Path) -> None:
    original = filled_buffer(seed=14)
    original.sample(8)  # advance the RNG so its state is not the seed's
    path = tmp_path / "replay.npz"
    np.savez(path, **original.state_dict())
    restored = FrameReplay(capacity=30, num_envs=2, frame_shape=FRAME, stack=3, seed=999)
    with np.load(path, allow_pickle=False) as data:
        restored.load_state_dict(data)
    assert len(restored) == len(original)
    for buf in (original, restored):  # identical writes after the restore too
        reset(buf, [250, None])
        step(buf, [251, 252])
    for _ in range(3):
        a, b = original.sample(16), restored.sample(16)
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_load_state_dict_rejects_other_geometry() -> None:
    state = filled_buffer(seed=0).state_dict()
    other = FrameReplay(capacity=30, num_envs=2, frame_shape=FRAME, stack=2, seed=0)
    with pytest.raises(ValueError, match="state_dict is for"):
        other.load_state_dict(state)


def test_len_counts_valid_transitions_through_wraparound() -> None:
    buf = FrameReplay(capacity=8, num_envs=1, frame_shape=FRAME, stack=3, seed=15)
    reset(buf, [1])
    lengths = []
    for tag in range(2, 14):
        step(buf, [tag])
        lengths.append(len(buf))
    # Starts need p >= count - 8 + 2 and p <= count - 2: at most 8 - 3 = 5 once wrapped.
    assert lengths == [1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5]


def test_atari_bytes_per_transition_is_about_one_frame() -> None:
    buf = FrameReplay(capacity=10_000, num_envs=4, frame_shape=(84, 84), stack=4, seed=0)
    assert buf.bytes_per_transition <= 1.1 * 84 * 84
    assert buf.nbytes >= 10_000 * 84 * 84


# ---------------------------------------------------------------------------- reference model


# A position of the brute-force model: (tag, episode_start, (action, terminal) or None).
Entry = tuple[int, bool, tuple[int, bool] | None]
# A transition of the model: (obs tags, action, terminal, next_obs tags).
ModelRow = tuple[tuple[int, ...], int, float, tuple[int, ...]]


def reference_rows(log: list[list[Entry]], cap: int, stack: int) -> set[ModelRow]:
    """Every valid transition of a brute-force model of the buffer; ``log[e][p]`` describes
    position ``p`` of env ``e``, and frame ``q`` of a stack ending at ``last`` is zero iff
    ``q < 0`` or an episode starts in ``(q, last]``."""

    def tags(history: list[Entry], last: int) -> tuple[int, ...]:
        out = []
        for q in range(last - stack + 1, last + 1):
            earlier = q < 0 or any(history[r][1] for r in range(q + 1, last + 1))
            out.append(0 if earlier else history[q][0])
        return tuple(out)

    rows: set[ModelRow] = set()
    for history in log:
        count = len(history)
        for p in range(max(0, count - cap + stack - 1), count - 1):
            if history[p][2] is not None:
                action, terminal = history[p][2]
                rows.add((tags(history, p), action, float(terminal), tags(history, p + 1)))
    return rows


def test_matches_a_brute_force_model_under_random_play() -> None:
    num_envs, cap, stack = 3, 9, 4
    buf = FrameReplay(cap * num_envs, num_envs, (1, 2), stack, seed=16)
    rng = np.random.default_rng(7)
    log: list[list[Entry]] = [[] for _ in range(num_envs)]
    next_tag = iter(range(1, 60_000))

    def encode(tag_list: list[int]) -> np.ndarray:
        # Two pixels hold a 16-bit tag, so tags stay unique over thousands of writes.
        return np.array([[[t // 256, t % 256]] for t in tag_list], dtype=np.uint8)

    def write_resets(mask: np.ndarray) -> None:
        tag_list = [next(next_tag) for _ in range(num_envs)]
        buf.add_reset(mask, encode(tag_list))
        for e in np.flatnonzero(mask):
            log[e].append((tag_list[e], True, None))

    write_resets(np.ones(num_envs, bool))
    for _ in range(300):
        actions = rng.integers(0, 18, num_envs)
        terminals = rng.random(num_envs) < 0.1
        ended = terminals | (rng.random(num_envs) < 0.05)  # some episodes are truncated
        tag_list = [next(next_tag) for _ in range(num_envs)]
        buf.add_step(actions, np.zeros(num_envs, np.float32), terminals, encode(tag_list))
        for e in range(num_envs):
            tag, start, _ = log[e][-1]
            log[e][-1] = (tag, start, (int(actions[e]), bool(terminals[e])))
            log[e].append((tag_list[e], False, None))
        if ended.any():
            write_resets(ended)
        want = reference_rows(log, cap, stack)
        assert len(buf) == len(want)
        batch = buf.sample(400)
        obs = batch.obs[:, :, 0].numpy().astype(int)  # (B, stack, 2)
        nxt = batch.next_obs[:, :, 0].numpy().astype(int)
        obs_tags = (obs[:, :, 0] * 256 + obs[:, :, 1]).tolist()
        nxt_tags = (nxt[:, :, 0] * 256 + nxt[:, :, 1]).tolist()
        got = {
            (tuple(o), a, t, tuple(x))
            for o, a, t, x in zip(
                obs_tags, batch.actions.tolist(), batch.terminals.tolist(), nxt_tags, strict=True
            )
        }
        # At most 3 * (9 - 4) = 15 valid transitions: 400 draws miss one with p < 1e-10.
        assert got == want
