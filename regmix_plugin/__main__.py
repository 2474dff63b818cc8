"""The ``regmix`` command line: one subcommand per stage of the RegMix loop.

Run ``regmix --help`` for the list, ``regmix SUBCOMMAND --help`` for its flags; every subcommand takes
``--config file.yaml`` and ``--print_config``.
"""

from __future__ import annotations

import warnings


def _commands() -> dict:
    # Each stage module keeps its heavy imports (torch, litgpt, lightgbm) inside functions, so importing
    # them all here costs little and `regmix --help` stays fast.
    from regmix_plugin.evaluate import evaluate
    from regmix_plugin.fit import fit, predict
    from regmix_plugin.demo import demo
    from regmix_plugin.inspect import inspect
    from regmix_plugin.optimize import optimize
    from regmix_plugin.prepare import prepare
    from regmix_plugin.recipe import recipe
    from regmix_plugin.sample import sample
    from regmix_plugin.sweep import sweep

    return {
        "prepare": prepare,
        "inspect": inspect,
        "sample": sample,
        "sweep": sweep,
        "evaluate": evaluate,
        "fit": fit,
        "predict": predict,
        "optimize": optimize,
        "recipe": recipe,
        "demo": demo,
    }


# Subcommands whose first argument may be given without its flag name, as in `regmix inspect out/final`.
_POSITIONAL = {"inspect": "--checkpoint_dir"}
# Boolean flags that may be given without a value.
_SWITCHES = {"--json", "--quick"}


def main(argv: list[str] | None = None) -> None:
    import sys

    from jsonargparse import CLI, set_parsing_settings

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) > 1 and argv[0] in _POSITIONAL and not argv[1].startswith("-"):
        argv.insert(1, _POSITIONAL[argv[0]])
    for i, arg in enumerate(argv):  # a bare switch means true: `regmix inspect DIR --json`
        if arg in _SWITCHES and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            argv.insert(i + 1, "true")
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    warnings.filterwarnings("ignore", message=".*is not a known type.*")
    CLI(_commands(), as_positional=False, args=argv)


if __name__ == "__main__":
    main()
