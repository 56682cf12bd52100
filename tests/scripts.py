"""Load a file of training_scripts/ (or benchmarks/) as a module, so tests call its functions and `main` in-process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str, folder: str = "training_scripts"):
    if str(ROOT / folder) not in sys.path:  # as when run: the scripts import their folder's script_args
        sys.path.insert(0, str(ROOT / folder))
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_flag(argv: list[str], flag: str) -> list[str]:
    """`argv` less `flag` and its value: a resume command that does not repeat the flag."""
    i = argv.index(flag)
    return argv[:i] + argv[i + 2 :]
