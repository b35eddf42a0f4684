"""Random mutations of config.yaml: each one validates or raises the project's ConfigError
naming a key of the config, never another exception."""

from __future__ import annotations

import copy
import random

import pytest
import yaml

from idscaling.config import SCHEMA_PATH, load_schema, validate_config
from idscaling.errors import ConfigError

DEFAULT = yaml.safe_load((SCHEMA_PATH.parents[2] / "config.yaml").read_text())
SCHEMA = load_schema()
N_MUTATIONS = 600
BAD_VALUES = [None, -1, 0, -0.5, 1e12, "", "x", "-flag", "a/b", [], {}, [1, "two"], True,
              {"nested": 1}, 3.7, "1e-3"]


def _paths(node, prefix=()):
    """Every key path of a nested config: mappings by key, lists by index."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield prefix + (i,)
            yield from _paths(value, prefix + (i,))


def _parent(config, path):
    node = config
    for part in path[:-1]:
        node = node[part]
    return node


def mutate(config: dict, rng: random.Random) -> tuple[dict, tuple]:
    config = copy.deepcopy(config)
    path = rng.choice(list(_paths(config)))
    parent, last = _parent(config, path), path[-1]
    kind = rng.choice(["delete", "value", "rename", "add"])
    if kind == "delete":
        del parent[last]
    elif kind == "value":
        parent[last] = copy.deepcopy(rng.choice(BAD_VALUES))
    elif kind == "rename" and isinstance(parent, dict):
        parent[rng.choice(["-x", "a b", "bad/name", "ok_name", "x" * 80])] = parent.pop(last)
    elif isinstance(parent, dict):
        parent[rng.choice(["typo", "lr_", "seed"])] = rng.choice(BAD_VALUES)
    else:
        parent.append(rng.choice(BAD_VALUES))
    return config, path


def _names(node) -> set[str]:
    out = set()
    if isinstance(node, dict):
        for key, value in node.items():
            out.add(str(key))
            out |= _names(value)
    elif isinstance(node, list):
        for value in node:
            out |= _names(value)
    return out


def test_random_mutations_validate_or_name_a_key():
    rng = random.Random(20261203)
    outcomes = {"valid": 0, "rejected": 0}
    for i in range(N_MUTATIONS):
        config, path = mutate(DEFAULT, rng)
        try:
            validate_config(copy.deepcopy(config), SCHEMA)
        except ConfigError as error:
            message = str(error)
            assert message.startswith("config:"), (i, path, message)
            known = _names(config) | _names(DEFAULT) | {"(top level)"}
            assert any(name in message for name in known), (i, path, message)
            outcomes["rejected"] += 1
        except Exception as error:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"mutation {i} at {path} raised {type(error).__name__}: {error}")
        else:
            outcomes["valid"] += 1
    print(f"config fuzz: {N_MUTATIONS} mutated configs, {outcomes['rejected']} rejected with "
          f"a named key, {outcomes['valid']} valid")
    assert outcomes["rejected"] > N_MUTATIONS // 3
