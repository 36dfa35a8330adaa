"""The one error type users see: bad input, named file, one line."""


class InputError(ValueError):
    """Bad data, config or search space. ``str(err)`` is one line naming the source and the problem."""

    def __init__(self, source, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self):  # Ray copies and pickles a trial's exception: rebuild it from both arguments
        return InputError, (self.source, self.problem)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line (whitespace runs collapsed), at most ``limit`` characters."""
    return " ".join(str(exc).split())[:limit]
