"""User-facing errors: one line that says what went wrong, why, and how to fix it.

>>> raise EvogmError("no weights in /x", "the folder holds no *.safetensors", "point --base at a HF model folder")
Traceback (most recent call last):
...
evogm.errors.EvogmError: no weights in /x: the folder holds no *.safetensors; fix: point --base at a HF model folder
"""


class EvogmError(Exception):
    """An error at the edge (config, files, models). The CLI prints it as one line and exits 2."""

    def __init__(self, what: str, why: str = "", fix: str = ""):
        message = what
        if why:
            message += f": {why}"
        if fix:
            message += f"; fix: {fix}"
        super().__init__(message)


class EvogmWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints it as one line)."""
