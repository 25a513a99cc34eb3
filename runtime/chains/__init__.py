"""Markov-chain samplers: kernels (init, step) and the one driver that runs them all."""
