"""Every `emr/fruits-emr` command docs/EMR.md shows runs, as written, with
--dry-run (which checks its flags, the region and the locations, and sends
nothing), from the copy of emr/ that pins the fake CUDA wheels (conftest's
`pinned`)."""

import os
import re
import shlex
import subprocess
import sys

from conftest import REPO

DOC = os.path.join(REPO, "docs", "EMR.md")


def commands():
    text = open(DOC, encoding="utf-8").read()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = cmd.split("  #")[0].strip()
            if cmd.startswith("emr/fruits-emr "):
                out.append(shlex.split(cmd))
    for inline in re.findall(r"`(emr/fruits-emr [^`]+)`", text):
        out.append(shlex.split(inline))
    return out


def test_every_fruits_emr_command_of_the_guide_runs_in_a_dry_run(pinned, fruits_bin):
    binary = fruits_bin
    found = commands()
    assert len(found) >= 6, found
    env = dict(os.environ, FRUITS_EMR_PYTHON=sys.executable, AWS_ENDPOINT_URL="http://127.0.0.1:9",
               FRUITS_CUDA_WHEELS=pinned.wheels, FRUITS_BIN=fruits_bin)
    env.pop("AWS_REGION", None)
    for argv in found:
        argv = [a.replace("path/to/fruits", str(binary)).replace("j-…", "j-123") for a in argv]
        if "--dry-run" not in argv:
            argv.insert(1, "--dry-run")
        if argv[2] in ("up", "demo", "run") and "--binary" not in argv:
            argv += ["--binary", str(binary)]
        out = subprocess.run([os.path.join(pinned.root, argv[0])] + argv[1:], capture_output=True, text=True,
                             env=env, cwd=REPO, timeout=60)
        assert out.returncode == 0, (argv, out.stdout, out.stderr)
