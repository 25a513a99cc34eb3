"""`python -m theoryc ...`: the command line, and the module torchrun starts on every rank:

    torchrun --nproc-per-node 2 -m theoryc -- sample phi4_2d --sampler hmc --chains 8 -o out.h5

(the `--` keeps torchrun's own option parser, which accepts abbreviations, away from theoryc's
options such as --n). Under torchrun each rank joins the job first (runtime/parallel/world.py).
"""
from __future__ import annotations

import sys


def run(argv: list[str]) -> None:
    from .cli import main
    from .runtime.errors import SamplerError
    from .runtime.parallel import job
    from .runtime.parallel.world import init_from_env
    if argv[:1] == ["--"]:
        argv = argv[1:]
    try:
        init_from_env()
    except (SamplerError, RuntimeError, ValueError) as err:   # bad timeout, no rendezvous
        print(f"Error: cannot join the torchrun job: {err}", file=sys.stderr)
        sys.exit(1)
    with job():
        main(args=argv, prog_name="theoryc")


if __name__ == "__main__":
    run(sys.argv[1:])
