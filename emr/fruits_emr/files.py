"""Where fruits-emr finds what it needs, computed here once: the files it
ships (the driver, the bootstrap action, the cluster and infrastructure
templates, the price table, the CUDA pins: data of this package, so an
installed fruits-emr has them), a clone's root when it runs from one, and
the `fruits` binary it uploads and asks for the European regions."""

import os
import shutil
from importlib import resources
from typing import Optional


def data(name: str) -> str:
    """The path of a file this package ships (installed as a plain file)."""
    return os.fspath(resources.files(__package__).joinpath(name))


def checkout() -> Optional[str]:
    """The repository's root when fruits-emr runs from a clone (this package
    is <root>/emr/fruits_emr), else None."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    is_clone = os.path.isfile(os.path.join(root, "Cargo.toml")) and os.path.isdir(os.path.join(root, "emr"))
    return root if is_clone else None


def default_binary() -> str:
    """$FRUITS_BIN; else a clone's release build when there is one; else
    `fruits` on the PATH; else where a clone would build it (so the error
    names the place)."""
    if os.environ.get("FRUITS_BIN"):
        return os.environ["FRUITS_BIN"]
    root = checkout()
    built = os.path.join(root, "target", "release", "fruits") if root else None
    if built and os.path.isfile(built):
        return built
    return shutil.which("fruits") or built or "fruits"


def default_cuda_wheels() -> str:
    """Where emr/fetch_cuda_wheels.sh puts the wheels when given no folder."""
    if os.environ.get("FRUITS_CUDA_WHEELS"):
        return os.environ["FRUITS_CUDA_WHEELS"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "fruits", "cuda-wheels")
