"""Encoders, fusion modules, heads and the :class:`MultimodalNet`."""

from mmanet.models.builder import build_network
from mmanet.models.network import MultimodalNet, NetOutput

__all__ = ["MultimodalNet", "NetOutput", "build_network"]
