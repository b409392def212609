"""Everything a run's configuration names, checked against the data before anything trains.

:func:`preflight` builds the network the configuration describes for this data (every encoder, fusion
and head option, the pyramids' compatibility), builds the method around it (MAR's head), and checks the
distilled feature names — so that a typo in ``mad.feature`` fails in seconds, not after the teacher has
trained. The network is discarded; training builds its own from the same seed.
"""

from __future__ import annotations

import torch

from mmanet.config import RunConfig
from mmanet.data import DataBundle
from mmanet.methods import method_entry
from mmanet.models.factory import build_net, check_feature_name
from mmanet.training.factory import task_info


def preflight(config: RunConfig, bundle: DataBundle) -> None:
    """Raise a :class:`~mmanet.config.ConfigError` (naming the key) for anything the run would fail on
    later: an unknown method, a component option, a feature the network does not expose."""
    entry = method_entry(config.method)
    info = task_info(bundle)
    info.headline(config.evaluate.metric)  # a registered metric this data can be scored with
    state = torch.random.get_rng_state()  # building consumes random numbers; the run must not notice
    try:
        net = build_net(config, info)
        for key, names in entry.cls.feature_keys(config).items():
            for name in names:
                check_feature_name(net, name, key)
    finally:
        torch.random.set_rng_state(state)
