"""The ``regmix`` command line: one subcommand per stage of the RegMix loop.

Run ``regmix --help`` for the list, ``regmix SUBCOMMAND --help`` for its flags; every subcommand takes
``--config file.yaml`` and ``--print_config``.

A user's mistake (a ``ValueError``/``FileNotFoundError`` raised by regmix_plugin's own code, or any
``RegmixError``) prints ``regmix SUBCOMMAND: error: <message>`` and exits 2, like a bad flag does;
``--debug`` (anywhere on the line) or ``REGMIX_DEBUG=1`` shows its traceback. Everything else is a bug
and keeps its traceback::

    regmix inspect out/pretrain/final
    REGMIX_DEBUG=1 regmix inspect out/pretrain/final
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path


def _commands() -> dict:
    # Each stage module keeps its heavy imports (torch, litgpt, lightgbm) inside functions, so importing
    # them all here costs little and `regmix --help` stays fast.
    from regmix_plugin.commands.entropy import entropy
    from regmix_plugin.commands.evaluate import evaluate
    from regmix_plugin.commands.fit import fit, predict
    from regmix_plugin.commands.fit_trajectory import fit_trajectory
    from regmix_plugin.commands.inspect_run import inspect
    from regmix_plugin.commands.optimize import optimize
    from regmix_plugin.commands.prepare import prepare
    from regmix_plugin.commands.propose import propose
    from regmix_plugin.commands.recipe import recipe
    from regmix_plugin.commands.sample import sample
    from regmix_plugin.commands.schedule import schedule
    from regmix_plugin.commands.sweep import sweep, sweep_status
    from regmix_plugin.demo import demo

    return {
        "prepare": prepare,
        "inspect": inspect,
        "entropy": entropy,
        "sample": sample,
        "sweep": sweep,
        "status": sweep_status,
        "evaluate": evaluate,
        "fit": fit,
        "predict": predict,
        "propose": propose,
        "optimize": optimize,
        "fit_trajectory": fit_trajectory,
        "schedule": schedule,
        "recipe": recipe,
        "demo": demo,
    }


# Subcommands whose first argument may be given without its flag name, as in `regmix inspect out/final`.
_POSITIONAL = {"inspect": "--checkpoint_dir", "status": "--sweep"}
# Boolean flags that may be given without a value.
_SWITCHES = {"--json", "--quick", "--active"}


_CONSTRAINTS = {
    f"--{k}": f"--constraints.{k}"
    for k in ("target_tokens", "max_epochs", "block_size", "min_weight", "max_weight", "exclude")
}
#: Flags renamed in 0.x, per subcommand: the old spelling still works for one release, with a deprecation note.
RENAMED = {
    "sample": {**_CONSTRAINTS, "--minimum": "--drop_below", "--prior": "--prior_source"},
    "optimize": {**_CONSTRAINTS, "--search": "--scoring"},
    "schedule": _CONSTRAINTS,
    "entropy": _CONSTRAINTS,
}


def renamed_flags(argv: list[str]) -> list[str]:
    """``argv`` with the old spellings of renamed flags (``--minimum 1e-3``, ``--max_epochs=4``) replaced by the
    new ones, with a deprecation note for each (:data:`RENAMED`)."""
    from regmix_plugin.errors import deprecated

    sub = argv[0] if argv else None
    table = RENAMED.get(sub, {})
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag in table:
            deprecated(flag, table[flag])
            arg = table[flag] + eq + value
        out.append(arg)
    return out


_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError)
_PACKAGE = Path(__file__).resolve().parent


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a user's mistake to report in one line, not a bug to show with its traceback.

    A ``RegmixError`` always is. A ``ValueError``/``FileNotFoundError`` is when regmix_plugin raised it
    (the innermost frame is in the package), since those messages name the flag and the fix; the same
    types raised inside numpy, torch or litgpt are usually bugs, so they keep their traceback.
    """
    from regmix_plugin.errors import RegmixError

    if isinstance(exc, RegmixError):
        return True
    if not isinstance(exc, _USER_ERRORS):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def _warned_from_package() -> bool:
    """Whether the warning being formatted was raised by regmix_plugin's code: walks the live stack past the
    warnings machinery to the caller of ``warnings.warn``."""
    frame = sys._getframe(2)
    while frame is not None and Path(frame.f_code.co_filename).name == "warnings.py":
        frame = frame.f_back
    return frame is not None and Path(frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def _plain_warnings(prog: str):
    """A ``warnings.formatwarning`` that writes regmix_plugin's own UserWarnings as ``PROG: warning: MESSAGE``.

    They are messages to the user (a baseline over its epoch bound, runs dropped from a fit), so they read
    like the CLI's errors, without Python's ``file:line: UserWarning:`` prefix and source line. Warnings
    from other libraries keep Python's format, which says where they come from. Only the format changes:
    filters and recorders (``catch_warnings(record=True)``, ``pytest.warns``) see every warning as before.
    """
    default = warnings.formatwarning

    def plain(message, category, filename, lineno, line=None):
        if issubclass(category, UserWarning) and _warned_from_package():
            return f"{prog}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    return plain


def _parser_class():
    from jsonargparse import ArgumentParser, DefaultHelpFormatter

    class HelpFormatter(DefaultHelpFormatter):
        # jsonargparse names pathlib.Path (and other plain classes) `<class 'Path'>` in `(type: ...)`.
        def _get_type_str(self, action):
            type_str = super()._get_type_str(action)
            return None if type_str is None else re.sub(r"<class '([^']+)'>", r"\1", type_str)

    class Parser(ArgumentParser):
        # jsonargparse builds each subcommand's parser as `type(parser)(description=...)`, so the formatter
        # has to be this class's default to reach `regmix SUBCOMMAND --help`.
        def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
            super().__init__(*args, formatter_class=formatter_class, **kwargs)

        def error(self, message, ex=None):
            from regmix_plugin.counts import token_count_error

            short = token_count_error(message)
            if short is None or not self.exit_on_error:
                super().error(message, ex)
            # a bad token count: one line naming the flag, not jsonargparse's one line per union member
            sys.stderr.write(f"{self.prog.replace(' [options]', '')}: error: {short}\n")
            self.exit(2)

    return Parser


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import CLI, set_parsing_settings

    from regmix_plugin import __version__

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("REGMIX_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if len(argv) > 1 and argv[0] in _POSITIONAL and not argv[1].startswith("-"):
        argv.insert(1, _POSITIONAL[argv[0]])
    for i, arg in enumerate(argv):  # a bare switch means true: `regmix inspect DIR --json`
        if arg in _SWITCHES and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            argv.insert(i + 1, "true")
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    commands = _commands()
    sub = next((a for a in argv if a in commands), None)
    prog = f"regmix{' ' + sub if sub else ''}"
    try:
        # the CLI's warning filter and format end with the command (catch_warnings does not keep the format)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is not a known type.*")
            default_format, warnings.formatwarning = warnings.formatwarning, _plain_warnings(prog)
            try:
                argv = renamed_flags(argv)
                result = CLI(
                    commands,
                    as_positional=False,
                    args=argv,
                    parser_class=_parser_class(),
                    prog="regmix",
                    version=__version__,
                )
            finally:
                warnings.formatwarning = default_format
    except Exception as e:
        if debug or not is_user_error(e):
            raise
        message = str(e).removeprefix(f"{prog}: ")  # some messages already name the subcommand
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
    if argv[:1] == ["sweep"] and isinstance(result, dict) and result.get("failed"):
        sys.exit(1)  # a run of this invocation failed: scripts and schedulers must see it


if __name__ == "__main__":
    main()
