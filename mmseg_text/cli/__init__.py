"""Command-line entry points (``[project.scripts]`` in pyproject.toml; ``scripts/*.py`` are shells over them).

Every command is ``main(argv=None) -> int``: it parses arguments here and calls one library function of
the library packages (training, inference, evaluation, studies, data). Errors a user can fix become one line on stderr and exit 1.
"""
