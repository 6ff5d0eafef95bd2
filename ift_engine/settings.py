"""Plugin settings: a plugin's own configuration in a workflow file, validated by its own
pydantic model, read by its components while the workflow runs.

    # workflow.yaml
    plugins:
      myplugin: {strict: false}

    # in the plugin
    @hookimpl
    def register_settings(register):
        register(PluginSettings("myplugin", MySettings))

    def parse(answer, template):
        if current_settings("myplugin").strict: ...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from pydantic import BaseModel

from .errors import IftError

_current: ContextVar[Mapping[str, BaseModel] | None] = ContextVar("ift_engine_plugin_settings", default=None)


@dataclass(frozen=True)
class PluginSettings:
    """Registers the settings model of the plugin configured under ``plugins: {name: ...}``."""

    name: str
    model: type[BaseModel]


def current_settings(name: str, model: type[BaseModel] | None = None) -> BaseModel:
    """The settings of plugin ``name`` in the running workflow: what the workflow configures,
    else the defaults of ``model`` or of the settings model the plugin registered. Outside a run
    there is no workflow to ask: give ``model`` for its defaults."""
    settings = (_current.get() or {}).get(name)
    if settings is not None:
        return settings
    if model is None:
        raise IftError(
            f"plugin settings '{name}': no workflow run configures them here; give the settings "
            f"model for its defaults, current_settings({name!r}, YourSettings)"
        )
    return model()


@contextmanager
def using_settings(settings: Mapping[str, BaseModel]) -> Iterator[None]:
    """Make ``settings`` current in this thread for the duration of the block."""
    token = _current.set(settings)
    try:
        yield
    finally:
        _current.reset(token)
