"""cuekit: ten visual-recognition research works as one tested PyTorch library."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "load_checkpoint"]


def __getattr__(name: str):
    # The public API is imported on first use, so `import cuekit` (and `cuekit --help`) stays fast.
    if name in ("create_model", "list_models", "load_checkpoint"):
        from cuekit.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'cuekit' has no attribute {name!r}")
