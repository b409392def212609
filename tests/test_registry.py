"""Registries: plain dicts filled by decorators; unknown keys list the valid ones."""

from __future__ import annotations

import pytest

from mmanet.data import DATASETS
from mmanet.models.fusion import FUSIONS
from mmanet.registry import Registry, UnknownKeyError


def make() -> Registry:
    registry: Registry = Registry("widget")

    @registry.register("beta")
    def beta():
        return "b"

    @registry.register("alpha")
    class Alpha:
        pass

    return registry


def test_register_returns_the_object_and_get_finds_it():
    registry = make()
    assert registry.get("beta")() == "b"
    assert registry.get("alpha").__name__ == "Alpha"
    assert registry.keys() == ["alpha", "beta"]
    assert list(registry) == ["alpha", "beta"]
    assert "alpha" in registry and "gamma" not in registry


def test_unknown_key_error_lists_the_valid_keys():
    with pytest.raises(UnknownKeyError) as err:
        make().get("gamma")
    assert isinstance(err.value, KeyError)
    assert str(err.value) == "unknown widget 'gamma'; valid: ['alpha', 'beta']"


def test_double_registration_is_an_error():
    registry = make()
    with pytest.raises(ValueError, match="widget 'alpha' is registered twice"):
        registry.register("alpha")(object())
    assert registry.keys() == ["alpha", "beta"]


def test_project_registries_list_their_keys():
    with pytest.raises(UnknownKeyError, match="concat"):
        FUSIONS.get("nope")
    assert {"concat", "hemis", "lcr", "rfnet", "mmformer"} <= set(FUSIONS.keys())
    with pytest.raises(UnknownKeyError, match="mfeat"):
        DATASETS.get("imagenet")
