"""Command groups that list their commands without importing them.

A ``LazyCommand`` row names a command, the ``module:attribute`` that defines it and its
summary (the first paragraph of its help). A group made by ``lazy_group(rows)`` lists the
rows and prints their summaries at once, and imports a row's module only when that
command runs or its own ``--help`` is asked. So ``kiosk --help`` does not pay for numpy,
OpenCV or the database layers that only some commands use; a test checks that each row's
summary is the one its command states.

The attribute is added to the group the way an eager Typer app would add it:

- ``command``: a function, as ``app.command(name, **settings)(function)``;
- ``group``: a ``typer.Typer``, as ``app.add_typer(attribute, name=name)``;
- ``register``: a ``register(app)`` function that adds this command (and maybe others).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import typer
from typer._click import Command, Context, HelpFormatter  # the click that typer bundles
from typer.core import MarkupMode, TyperCommand, TyperGroup


@dataclass(frozen=True)
class LazyCommand:
    """One command of a group, known by name and summary before its module is imported."""

    name: str
    target: str  # "package.module:attribute"
    summary: str  # the first paragraph of the command's help
    kind: Literal["command", "group", "register"] = "command"
    settings: Mapping[str, Any] = field(default_factory=dict)  # app.command(...) arguments

    def load(self, markup: MarkupMode) -> Command:
        """Import the module and build the command as an eager app would."""
        module_name, _, attribute = self.target.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        holder = typer.Typer(
            rich_markup_mode=markup, add_completion=False, pretty_exceptions_enable=False
        )
        holder.callback()(_no_options)  # a group even when it holds one command
        if self.kind == "group":
            holder.add_typer(target, name=self.name)
        elif self.kind == "register":
            target(holder)
        else:
            holder.command(self.name, **self.settings)(target)
        return typer.main.get_group(holder).commands[self.name]


def _no_options() -> None:
    """Placeholder callback of the holder app that builds one lazy command."""


class LazyCommands(MutableMapping[str, Command]):
    """A group's commands by name: eager ones as given, lazy ones built on first access."""

    def __init__(
        self, eager: Mapping[str, Command], rows: tuple[LazyCommand, ...], markup: MarkupMode
    ) -> None:
        self._built: dict[str, Command] = dict(eager)
        self._rows = {row.name: row for row in rows if row.name not in self._built}
        self._order = [*self._built, *self._rows]
        self._markup = markup

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            row = self._rows[name]  # KeyError for an unknown name, as a dict would
            self._built[name] = row.load(self._markup)
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command
        if name not in self._order:
            self._order.append(name)

    def __delitem__(self, name: str) -> None:
        if name not in self._order:
            raise KeyError(name)
        self._order.remove(name)
        self._built.pop(name, None)
        self._rows.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def loaded(self, name: str) -> bool:
        """Whether ``name`` is built (its module imported)."""
        return name in self._built

    def listing(self, name: str) -> Command:
        """The command, or while it is not built a stand-in carrying its summary."""
        if name in self._built:
            return self._built[name]
        return TyperCommand(name, help=self._rows[name].summary)


class LazyGroup(TyperGroup):
    """A Typer group whose ``rows`` are imported only when used (see ``lazy_group``)."""

    rows: ClassVar[tuple[LazyCommand, ...]] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.commands, self.rows, self.rich_markup_mode)

    @property
    def lazy_commands(self) -> LazyCommands:
        commands = self.commands
        assert isinstance(commands, LazyCommands)
        return commands

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        listed = [(name, self.lazy_commands.listing(name)) for name in self.list_commands(ctx)]
        rows = [(name, command) for name, command in listed if not command.hidden]
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, command.get_short_help_str(limit)) for name, command in rows]
            )


def lazy_group(rows: tuple[LazyCommand, ...]) -> type[LazyGroup]:
    """A ``LazyGroup`` class holding ``rows``, to pass as ``typer.Typer(cls=...)``."""
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"a command name appears twice in {names}")
    return type("LazyGroup", (LazyGroup,), {"rows": rows})


def load_all(app: typer.Typer) -> dict[str, Command]:
    """Build every command of ``app`` (importing every module), as an eager app does."""
    group = typer.main.get_group(app)
    return dict(group.commands.items())
