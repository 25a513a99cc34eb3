import os
import sys

import torch

# Tests share two cores with each other and with CI; one thread each keeps timings predictable.
torch.set_num_threads(int(os.environ.get("THEORYC_TEST_THREADS", "1")))
sys.path.insert(0, os.path.dirname(__file__))
