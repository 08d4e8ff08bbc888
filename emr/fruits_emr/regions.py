"""The regions data and clusters may use: the binary's own list
(`fruits regions --json`, from src/storage/region.rs), so there is one list
for the binary, the infrastructure template and this tool."""

import dataclasses
import json
import subprocess


class RegionRefused(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Europe:
    """The allowed region codes, in the binary's order, and its default."""
    codes: tuple
    default: str

    def check(self, region: str) -> str:
        """`region`, or RegionRefused before any request is made."""
        if region not in self.codes:
            raise RegionRefused(
                f"region {region} is outside Europe; fruits keeps data and clusters in {', '.join(self.codes)}")
        return region


def of_binary(binary: str) -> Europe:
    """Asks `binary` for its list; FileNotFoundError naming it when it
    cannot answer (not built, not executable, not fruits)."""
    try:
        out = subprocess.run([binary, "regions", "--json"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FileNotFoundError(f"cannot run the fruits binary {binary} ({e}): build it (cargo build --release) "
                                "or name it with --binary or $FRUITS_BIN") from None
    try:
        listed = json.loads(out.stdout)
        return Europe(codes=tuple(r["code"] for r in listed["regions"]), default=listed["default"])
    except (ValueError, KeyError, TypeError):
        raise FileNotFoundError(f"{binary} regions --json exited {out.returncode} without the regions: "
                                f"is it a fruits binary? {out.stderr.strip()[-400:]}") from None
