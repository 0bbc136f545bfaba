"""A corpus given as text files: ``prepare --train FILE --valid FILE [--test FILE]``."""
from __future__ import annotations

from .textio import check_input_file


class TextFiles:
    """Train, valid and test text files (one paragraph a line; .txt, .gz,
    .bz2), prepared as they are; ``valid`` and ``test`` may be None."""

    def __init__(self, train: str, valid: str | None = None, test: str | None = None):
        self.paths = {"train": train, "valid": valid, "test": test}

    @property
    def inputs(self) -> dict:
        return {f"--{split}": path for split, path in self.paths.items()}

    def check(self) -> None:
        for split, path in self.paths.items():
            if path is not None:
                check_input_file(path, f"--{split} file")

    def extract(self, out_dir: str, *, log=None) -> dict:
        """The given files (checked); nothing is written to ``out_dir``."""
        self.check()
        return {split: path for split, path in self.paths.items() if path is not None}
