"""Tests of :class:`DeviceFrameReplay`: bit-identical to :class:`FrameReplay`, batches on device.

A :class:`FrameReplay` and a :class:`DeviceFrameReplay` with the same seed are fed the same random
episodes (random frames, so a zeroed earlier-episode frame or a wrong slot cannot pass by chance)
and must return the same batches and leave their RNGs in the same state. The CPU runs use
``device="cpu"``; the CUDA test repeats them on the GPU where one is available.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_ticket.replay import DeviceFrameReplay, FrameReplay, ReplayBatch

# (capacity, num_envs, frame_shape, stack): capacity_per_env is small so play wraps around.
ATARI = (60, 3, (84, 84), 4)
MINATAR = (40, 2, (10, 10, 10), 1)
STACKED_CHANNELS = (33, 2, (2, 5, 6), 3)  # 3-d frames with stack > 1: channel order and masking
CONFIGS = pytest.mark.parametrize(
    "config", [ATARI, MINATAR, STACKED_CHANNELS], ids=["atari", "minatar", "stacked-channels"]
)
Config = tuple[int, int, tuple[int, ...], int]


@pytest.fixture(autouse=True)
def one_cpu_thread() -> Iterator[None]:
    """Run torch's CPU ops single-threaded: the tensors here are ~1 MB, and on a busy machine
    OpenMP's spinning workers made a CPU ``index_select`` of them 500x slower (8 ms vs 17 us)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def twins(config: Config, seed: int, device: str = "cpu") -> tuple[FrameReplay, DeviceFrameReplay]:
    """A host and a device replay of the same geometry and sampling seed."""
    capacity, num_envs, frame_shape, stack = config
    return (
        FrameReplay(capacity, num_envs, frame_shape, stack, seed),
        DeviceFrameReplay(capacity, num_envs, frame_shape, stack, seed, device=device),
    )


def play(
    bufs: tuple[FrameReplay, ...], steps: int, seed: int, end_prob: float = 0.15
) -> Iterator[int]:
    """Feed every buffer the same random episodes, yielding the step index after each add_step.

    Frames are uniform random uint8; episodes end (terminated or truncated) with ``end_prob``
    per env and step, and the ended envs are reset. Every fifth step passes a non-contiguous
    frames array.
    """
    first = bufs[0]
    n, shape = first.num_envs, first.frame_shape
    rng = np.random.default_rng(seed)

    def random_frames() -> np.ndarray:
        return rng.integers(0, 256, (n, *shape), dtype=np.uint8)

    frames = random_frames()
    for buf in bufs:
        buf.add_reset(np.ones(n, dtype=bool), frames)
    for t in range(steps):
        actions = rng.integers(0, 18, n)
        rewards = rng.normal(size=n).astype(np.float32)
        terminals = rng.random(n) < end_prob
        ended = terminals | (rng.random(n) < end_prob / 2)
        if t % 5 == 4:  # a strided view: every other column of a wider array
            wide = rng.integers(0, 256, (n, *shape[:-1], 2 * shape[-1]), dtype=np.uint8)
            frames = wide[..., ::2]
            assert not frames.flags.c_contiguous
        else:
            frames = random_frames()
        for buf in bufs:
            buf.add_step(actions, rewards, terminals, frames)
        if ended.any():
            frames = random_frames()
            for buf in bufs:
                buf.add_reset(ended, frames)
        yield t


def assert_same_batch(host: ReplayBatch, dev: ReplayBatch, device_type: str) -> None:
    """Every field of ``dev`` is on ``device_type`` and bit-identical to ``host``'s."""
    for name, want, got in zip(ReplayBatch._fields, host, dev, strict=True):
        assert got.device.type == device_type, name
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert torch.equal(got.cpu(), want), name


def assert_rng_in_step(a: FrameReplay, b: FrameReplay) -> None:
    """The two buffers' own sampling RNGs are in the same state."""
    assert a._rng.bit_generator.state == b._rng.bit_generator.state


def assert_mirror_matches(buf: DeviceFrameReplay) -> None:
    """The device mirror holds exactly the host frames."""
    assert torch.equal(buf._device_frames.cpu(), torch.from_numpy(buf._frames_flat))


def check_twins_agree(config: Config, device: str) -> None:
    """Play both twins through wrap-around and episode ends, comparing a sample every step."""
    host, dev = twins(config, seed=3, device=device)
    zeroed_frames = 0
    for t in play((host, dev), steps=70, seed=11):
        if len(host) == 0:
            continue
        batch_size = (1, 32, 7)[t % 3]
        want = host.sample(batch_size)
        zeroed_frames += int((want.obs.reshape(-1, *dev.frame_shape) == 0).flatten(1).all(1).sum())
        assert_same_batch(want, dev.sample(batch_size), torch.device(device).type)
        assert_rng_in_step(host, dev)
    assert len(dev) == len(host)
    assert int(host._count.min()) > 2 * host.capacity_per_env  # every env wrapped around
    if host.stack > 1:
        assert zeroed_frames > 0  # earlier-episode zeroing was exercised
    assert_mirror_matches(dev)


# ---------------------------------------------------------------------------- equivalence


@CONFIGS
def test_batches_are_bit_identical_to_frame_replay(config: Config) -> None:
    check_twins_agree(config, "cpu")


def test_state_dict_round_trip_from_frame_replay(tmp_path: Path) -> None:
    original = FrameReplay(*ATARI, seed=5)
    for _ in play((original,), steps=50, seed=12):
        pass
    original.sample(8)  # advance the RNG so its state is not the seed's
    path = tmp_path / "replay.npz"
    np.savez(path, **original.state_dict())
    restored = DeviceFrameReplay(*ATARI, seed=999, device="cpu")
    with np.load(path, allow_pickle=False) as data:
        restored.load_state_dict(data)
    assert_mirror_matches(restored)
    assert_rng_in_step(original, restored)
    for _ in range(3):
        assert_same_batch(original.sample(16), restored.sample(16), "cpu")
    # Writes after the restore reach the mirror too, and a FrameReplay restores the device one.
    for _ in play((original, restored), steps=10, seed=13):
        assert_same_batch(original.sample(16), restored.sample(16), "cpu")
    back = FrameReplay(*ATARI, seed=0)
    back.load_state_dict(restored.state_dict())
    assert_same_batch(back.sample(16), restored.sample(16), "cpu")


def test_sampling_with_another_rng_leaves_the_own_stream_alone() -> None:
    host, dev = twins(ATARI, seed=6)
    for _ in play((host, dev), steps=30, seed=14):
        pass
    own = dev._rng.bit_generator.state
    assert_same_batch(
        host.sample(16, rng=np.random.default_rng(5)),
        dev.sample(16, rng=np.random.default_rng(5)),
        "cpu",
    )
    assert dev._rng.bit_generator.state == own
    assert_same_batch(host.sample(16), dev.sample(16), "cpu")


# ---------------------------------------------------------------------------- batch contract


def test_batch_dtypes_shapes_and_fresh_storage() -> None:
    _, dev = twins(ATARI, seed=7)
    for _ in play((dev,), steps=10, seed=15):
        pass
    first = dev.sample(5)
    assert first.obs.shape == first.next_obs.shape == (5, 4, 84, 84)
    assert first.obs.dtype == first.next_obs.dtype == torch.uint8
    assert first.actions.shape == first.rewards.shape == first.terminals.shape == (5,)
    assert first.actions.dtype == torch.int64
    assert first.rewards.dtype == first.terminals.dtype == torch.float32
    kept = [x.clone() for x in first]
    second = dev.sample(5)
    assert second.obs.data_ptr() != first.obs.data_ptr()
    for x, y in zip(first, kept, strict=True):  # unlike FrameReplay, not overwritten
        assert torch.equal(x, y)


def test_sample_errors_match_frame_replay() -> None:
    _, dev = twins(ATARI, seed=8)
    with pytest.raises(ValueError, match="no complete transition"):
        dev.sample(4)
    dev.add_reset(np.ones(3, dtype=bool), np.zeros((3, 84, 84), dtype=np.uint8))
    with pytest.raises(ValueError, match="no complete transition"):
        dev.sample(4)
    dev.add_step(
        np.zeros(3, np.int64),
        np.zeros(3, np.float32),
        np.zeros(3, bool),
        np.ones((3, 84, 84), np.uint8),
    )
    with pytest.raises(ValueError, match="batch_size"):
        dev.sample(0)
    assert dev.sample(2).next_obs[:, -1].eq(1).all()


# ---------------------------------------------------------------------------- sizing


def test_fits_and_mirror_size(monkeypatch: pytest.MonkeyPatch) -> None:
    _, dev = twins(STACKED_CHANNELS, seed=0)
    # capacity 33 over 2 envs -> 17 slots each, 2 * 17 frames of 2 * 5 * 6 bytes.
    assert dev.device_nbytes == DeviceFrameReplay.mirror_nbytes(33, 2, (2, 5, 6)) == 34 * 60
    assert dev.device == torch.device("cpu")
    assert DeviceFrameReplay.fits(10**12, 4, (84, 84), "cpu", members=8)

    def mem_get_info(device: torch.device) -> tuple[int, int]:
        assert device == torch.device("cuda:1")
        return 1000, 4000

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    # 2 envs * 5 slots * 100 bytes = 1000 bytes per mirror against 1000 bytes free.
    assert not DeviceFrameReplay.fits(10, 2, (10, 10), "cuda:1")  # default headroom 0.5
    assert DeviceFrameReplay.fits(10, 2, (10, 10), "cuda:1", headroom=1.0)
    assert not DeviceFrameReplay.fits(10, 2, (10, 10), "cuda:1", members=2, headroom=1.0)
    # 2 * 2 slots * 100 bytes = 400 per mirror: two take 800 <= 0.9 * 1000.
    assert DeviceFrameReplay.fits(4, 2, (10, 10), "cuda:1", members=2, headroom=0.9)
    with pytest.raises(ValueError, match="members"):
        DeviceFrameReplay.fits(10, 2, (10, 10), "cuda:1", members=0)
    with pytest.raises(ValueError, match="headroom"):
        DeviceFrameReplay.fits(10, 2, (10, 10), "cuda:1", headroom=1.5)


# ---------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@CONFIGS
def test_batches_are_bit_identical_on_cuda(config: Config) -> None:
    check_twins_agree(config, "cuda")
    assert DeviceFrameReplay.fits(1000, 4, (84, 84), "cuda")
    assert not DeviceFrameReplay.fits(10**15, 4, (84, 84), "cuda")
