"""Progressive model transmission (Lee et al., ICMLA 2021): bit-plane packages, an HTTP server,
and a client that yields an approximate model after each part.

Submodules: `codec` (quantisation, bit planes), `package` (manifest + parts, `pack`), `server`
(aiohttp), `client` (async and synchronous clients). Nothing heavy is imported here.
"""
from __future__ import annotations

__all__ = ["pack", "load_manifest", "ProgressiveClient", "iter_stages", "ServerThread", "start_server"]

_LAZY = {
    "pack": "cuekit.transmit.package", "load_manifest": "cuekit.transmit.package",
    "ProgressiveClient": "cuekit.transmit.client", "iter_stages": "cuekit.transmit.client",
    "ServerThread": "cuekit.transmit.server", "start_server": "cuekit.transmit.server",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cuekit.transmit' has no attribute {name!r}")
