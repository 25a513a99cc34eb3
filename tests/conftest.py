import os
import sys

import torch

# Tests share two cores with each other and with CI; one thread each keeps timings predictable.
torch.set_num_threads(int(os.environ.get("THEORYC_TEST_THREADS", "1")))
sys.path.insert(0, os.path.dirname(__file__))

# ../shared/reference/exact.json beside the repository (every developer and CI has it there).
REFERENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir,
                         "shared", "reference", "exact.json")
