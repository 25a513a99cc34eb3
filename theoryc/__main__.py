"""`python -m theoryc ...`: the command line, and the module torchrun starts on every rank:

    torchrun --nproc-per-node 2 -m theoryc -- sample phi4_2d --sampler hmc --chains 8 -o out.h5

(the `--` keeps torchrun's own option parser, which accepts abbreviations, away from theoryc's
options such as --n). Under torchrun each rank joins the job first (runtime/parallel/world.py).
"""
from __future__ import annotations

import os
import sys


def run(argv: list[str]) -> None:
    from .cli import main
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if "RANK" not in os.environ:        # not under torchrun: the plain command line
        main(args=argv, prog_name="theoryc")
        return
    from torch.distributed import DistError
    from .runtime.errors import SamplerError
    from .runtime.parallel import job
    from .runtime.parallel.world import collective_failure, init_from_env, is_collective_failure
    try:
        init_from_env()
    except (SamplerError, DistError, ValueError) as err:     # bad timeout, no rendezvous
        print(f"Error: cannot join the torchrun job: {err}", file=sys.stderr)
        sys.exit(1)
    try:
        with job():
            main(args=argv, prog_name="theoryc")
    except RuntimeError as err:      # a rank died or a collective timed out (DDP's, say)
        if not is_collective_failure(err):
            raise
        print(f"Error: {collective_failure(err)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run(sys.argv[1:])
