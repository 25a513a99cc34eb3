"""theoryc: compile lattice field theories to torch and sample them."""
__version__ = "0.1.0"

from .api import CompiledTheory, compile, emit, load, load_text, shipped_theories  # noqa: E402
from .api import measure, observe  # noqa: E402
from .api import sample  # noqa: E402
from .api import Trained, train  # noqa: E402

__all__ = ["load", "load_text", "compile", "emit", "shipped_theories", "CompiledTheory", "measure", "observe", "sample",
           "train", "Trained", "__version__"]
