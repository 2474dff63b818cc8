"""The ``regmix`` command line: one subcommand per stage of the RegMix loop.

Run ``regmix --help`` for the list, ``regmix SUBCOMMAND --help`` for its flags; every subcommand takes
``--config file.yaml`` and ``--print_config``.
"""

from __future__ import annotations

import warnings


def _commands() -> dict:
    # Each stage module keeps its heavy imports (torch, litgpt, lightgbm) inside functions, so importing
    # them all here costs little and `regmix --help` stays fast.
    from regmix_plugin.inspect import inspect
    from regmix_plugin.prepare import prepare

    return {
        "prepare": prepare,
        "inspect": inspect,
    }


def main() -> None:
    from jsonargparse import CLI, set_docstring_parse_options

    set_docstring_parse_options(attribute_docstrings=True)
    warnings.filterwarnings("ignore", message=".*is not a known type.*")
    CLI(_commands(), as_positional=False)


if __name__ == "__main__":
    main()
