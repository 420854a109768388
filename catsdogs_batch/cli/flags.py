"""How the command line is made and speaks: each flag from its option in options.py (`option`:
the default, the range or choices, the type), each command's options dataclass from the parsed
arguments (`options_from`), and every line it prints escaped (`say`, `say_error`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import printable
from ..options import Bounds, flag, number_pair

EXIT_ERROR, EXIT_NOT_ALL_SORTED, EXIT_INTERRUPTED = 1, 3, 130


def number(kind: type, bounds: Bounds | None = None) -> Callable:
    """An argparse type: a `kind` that `bounds` admits, so that a bad value stops the command
    before any work, with argparse's one-line usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if bounds is not None and not bounds.admits(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bounds}")
        return value

    return parse


def option(parser: argparse.ArgumentParser, options: type, name: str, help: str, *flags: str, **extra: Any) -> None:
    """Add the flag of option `name` of the dataclass `options` (its flag, or `flags`; one without a
    dash is positional), with the default, type, range and choices the dataclass gives it. A yes/no
    option on by default is turned off by its flag (name it, e.g. --no-calibration)."""
    f = next(f for f in dataclasses.fields(options) if f.name == name)
    kind = typing.get_type_hints(options)[name]
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    prefix = extra.pop("prefix", "")
    kwargs: dict[str, Any] = {"help": help}
    if flags and not flags[0].startswith("-"):  # positional
        flags, kwargs["metavar"] = (prefix + name,), flags[0]
    else:
        kwargs["dest"] = prefix + name
    if kind is bool:  # a --no-X flag always turns X off
        kwargs["action"] = "store_false" if default or any(f.startswith("--no-") for f in flags) else "store_true"
    else:
        kinds = {kind, *typing.get_args(kind)}
        if number_pair(kind):
            kwargs.update(nargs=2, type=number(float, f.metadata.get("bounds")))
        elif kinds & {int, float}:
            kwargs["type"] = number(int if int in kinds else float, f.metadata.get("bounds"))
        elif Path in kinds:
            kwargs["type"] = Path
        elif str not in kinds:
            raise TypeError(f"{options.__name__}.{name}: no flag for {kind}")
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    parser.add_argument(*(flags or (flag(prefix + name),)), **{**kwargs, **extra})


def options_from(options: type, args: argparse.Namespace, prefix: str = "", **given: Any) -> Any:
    """The dataclass `options` from parsed arguments: each field from the argument of its name
    (nested options dataclasses likewise; an engine's own with its prefix, e.g. ray_address),
    `given` as given, and the dataclass's default where the argument is absent or None."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        if f.name in given:
            values[f.name] = given[f.name]
        elif dataclasses.is_dataclass(f.default_factory):
            nested = f"{prefix}{f.name}_" if "engine" in f.metadata else prefix
            values[f.name] = options_from(f.default_factory, args, nested)
        elif (value := getattr(args, prefix + f.name, None)) is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return options(**values)


class Parser(argparse.ArgumentParser):
    """argparse, with what it prints escaped: a usage error quotes the user's words."""

    def _print_message(self, message: str, file=None) -> None:
        if message:
            lines = "\n".join(printable(line) for line in message.splitlines())
            super()._print_message(lines + ("\n" if message.endswith("\n") else ""), file)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" where there is a default worth showing and the help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def command(sub: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    return sub.add_parser(name, formatter_class=DefaultsHelpFormatter, **kwargs)


def say(text: str, file=None) -> None:
    """Print a report for people: each of its lines escaped (the reports escape the names they
    hold, so a name with a line break in it stays on its line), so no name drives the terminal."""
    print("\n".join(printable(line) for line in str(text).splitlines()), file=file or sys.stdout)


def say_error(command: str, message: object) -> None:
    """The one line of an error, escaped whole."""
    print(printable(f"catsdogs {command}: error: {message}"), file=sys.stderr)
