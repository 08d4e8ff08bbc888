"""The regions data and clusters may use: the binary's own list
(src/storage/region.rs, EUROPEAN_REGIONS), read from its source so there is
one list for the binary, the infrastructure template and this tool."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGION_RS = os.path.join(REPO, "src", "storage", "region.rs")


def european_regions(path: str = REGION_RS) -> list:
    """The codes of the EUROPEAN_REGIONS table, in its order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    table = re.search(r"EUROPEAN_REGIONS: \[[^\]]*\] = \[(.*?)\n\];", text, re.S)
    if not table:
        raise RuntimeError(f"{path}: no EUROPEAN_REGIONS table")
    codes = re.findall(r'\(\s*"([a-z0-9-]+)"\s*,', table.group(1))
    if not codes:
        raise RuntimeError(f"{path}: EUROPEAN_REGIONS is empty")
    return codes


def default_region(path: str = REGION_RS) -> str:
    with open(path, encoding="utf-8") as f:
        m = re.search(r'DEFAULT_REGION: &str = "([a-z0-9-]+)"', f.read())
    if not m:
        raise RuntimeError(f"{path}: no DEFAULT_REGION")
    return m.group(1)


class RegionRefused(Exception):
    pass


def check(region: str) -> str:
    """`region`, or RegionRefused before any request is made."""
    allowed = european_regions()
    if region not in allowed:
        raise RegionRefused(
            f"region {region} is outside Europe; fruits keeps data and clusters in {', '.join(allowed)}")
    return region
