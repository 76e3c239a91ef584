"""Nature-CNN and MinAtar value networks: shapes, parameter names, scaling, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparse_ticket.nets import MinAtarEncoder, NatureEncoder, ValueNetwork, build_network

ATARI = (4, 84, 84)
MINATAR = (10, 10, 10)


def test_nature_shapes_and_parameter_names() -> None:
    net = build_network("nature", ATARI, 6)
    obs = torch.randint(0, 256, (3, *ATARI), dtype=torch.uint8)
    assert net(obs).shape == (3, 6)
    assert net.features(obs).shape == (3, 512)
    assert isinstance(net.encoder, NatureEncoder)
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {
        "encoder.conv1.weight": (32, 4, 8, 8),
        "encoder.conv1.bias": (32,),
        "encoder.conv2.weight": (64, 32, 4, 4),
        "encoder.conv2.bias": (64,),
        "encoder.conv3.weight": (64, 64, 3, 3),
        "encoder.conv3.bias": (64,),
        "encoder.fc.weight": (512, 3136),
        "encoder.fc.bias": (512,),
        "head.weight": (6, 512),
        "head.bias": (6,),
    }


def test_minatar_shapes_and_parameter_names() -> None:
    net = build_network("minatar", MINATAR, 1)
    obs = torch.randint(0, 2, (5, *MINATAR), dtype=torch.uint8)
    assert net(obs).shape == (5, 1)
    assert net.features(obs).shape == (5, 128)
    assert isinstance(net.encoder, MinAtarEncoder)
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {
        "encoder.conv1.weight": (16, 10, 3, 3),
        "encoder.conv1.bias": (16,),
        "encoder.fc.weight": (128, 1024),
        "encoder.fc.bias": (128,),
        "head.weight": (1, 128),
        "head.bias": (1,),
    }


def test_nature_scales_uint8_by_255() -> None:
    torch.manual_seed(0)
    encoder = NatureEncoder(4)
    obs = torch.randint(0, 256, (2, *ATARI), dtype=torch.uint8)
    x = obs.float() / 255.0
    for conv in (encoder.conv1, encoder.conv2, encoder.conv3):
        x = F.relu(conv(x))
    expected = F.relu(encoder.fc(x.flatten(1)))
    assert torch.allclose(encoder(obs), expected, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        encoder(obs.float())


def test_minatar_does_not_scale() -> None:
    encoder = MinAtarEncoder(10)
    obs = torch.randint(0, 2, (2, *MINATAR), dtype=torch.uint8)
    expected = F.relu(encoder.fc(F.relu(encoder.conv1(obs.float())).flatten(1)))
    assert torch.allclose(encoder(obs), expected)
    assert torch.allclose(encoder(obs.bool()), expected)


@pytest.mark.parametrize(("encoder", "shape"), [("nature", ATARI), ("minatar", MINATAR)])
def test_construction_is_deterministic_under_seed(encoder: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(123)
    first = build_network(encoder, shape, 4).state_dict()
    torch.manual_seed(123)
    second = build_network(encoder, shape, 4).state_dict()
    third = build_network(encoder, shape, 4).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["head.weight"], third["head.weight"])


def test_in_channels_follow_obs_shape() -> None:
    net = build_network("minatar", (4, 10, 10), 6)
    assert net.encoder.conv1.in_channels == 4


def test_value_network_head_is_plain_linear() -> None:
    net = ValueNetwork(MinAtarEncoder(10), 3)
    assert type(net.head) is torch.nn.Linear
    assert (net.head.in_features, net.head.out_features) == (128, 3)


def test_build_network_rejects_unknown_encoder() -> None:
    with pytest.raises(ValueError, match="impala"):
        build_network("impala", ATARI, 6)
