"""Generative models (flows, autoregressive networks, diffusion) and the one trainer."""
