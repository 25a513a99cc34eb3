"""Runs split over the ranks of a torchrun job: ranks and devices (world), exchanges between
them (collectives) and random streams that follow the chains (streams)."""
from .world import World, is_main, job, world  # noqa: F401
