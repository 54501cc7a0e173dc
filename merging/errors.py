"""Errors of the merge library; the registry maps them onto its own family."""


class MergeError(ValueError):
    """Bad input to a merge: the message names the tensor or file and the fix."""


class CheckpointError(MergeError):
    """A model directory or safetensors file that cannot be used as it is."""
