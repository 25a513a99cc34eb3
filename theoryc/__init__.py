"""theoryc: compile lattice field theories to torch and sample them."""
__version__ = "0.1.0"
