"""Errors the runtimes raise for the user (kept free of torch so the CLI can import it cheaply)."""


class SamplerError(Exception):
    """A user-facing refusal or misuse (complex action for HMC, wrong checkpoint, ...).

    The CLI prints its message without a traceback.
    """
