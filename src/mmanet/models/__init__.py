"""Encoders, fusion modules, heads and the :class:`MultimodalNet`."""

from mmanet.models.network import MultimodalNet, NetOutput, build_network

__all__ = ["MultimodalNet", "NetOutput", "build_network"]
