"""A guard that fails a test when code under test calls the `eval` or `exec` builtins."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager

from tests.security.tally import TALLY


class EvalCalledError(AssertionError):
    """Code under test called `eval` or `exec` on something."""


@contextmanager
def no_eval() -> Iterator[None]:
    """Replace `builtins.eval` and `builtins.exec` with functions that raise, inside the block.

    Only the code under test runs inside the block: the patch is undone before Hypothesis
    generates the next example, so its own use of `exec` is unaffected. `compile` stays, because
    `ast.parse` is built on it.
    """
    originals = builtins.eval, builtins.exec

    def refuse(name: str):
        def refused(*args, **kwargs):
            TALLY["eval or exec calls"] += 1
            raise EvalCalledError(f"{name}() called on {str(args[:1])[:120]}")

        return refused

    builtins.eval, builtins.exec = refuse("eval"), refuse("exec")
    try:
        yield
    finally:
        builtins.eval, builtins.exec = originals
