"""Figures of ensembles, models and training runs (matplotlib, Agg backend)."""
