"""Plugin loading: built-ins through hooks, entry points, broken plugins, strict mode, filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ift_engine import InstructionTemplate, PluginError, RegistrationError, hookimpl, plugins
from ift_engine.plugins import Components, PluginLoadWarning, build_plugin_manager

GOOD_PLUGIN = """
from ift_engine import InstructionTemplate, hookimpl

@hookimpl
def register_templates(register):
    register(InstructionTemplate(name="haiku-en", task="haiku", paraphrases=("A haiku about {topic}",), variables=("topic",)))
"""


def make_distribution(site: Path, dist: str, module: str, source: str, entry_name: str | None = None) -> None:
    """Write an importable module plus a .dist-info declaring it in the `ift_engine` group:
    importlib.metadata finds it on sys.path exactly as it finds a pip-installed package."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text(f"[ift_engine]\n{entry_name or module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtins_register_through_hooks():
    components = plugins.installed_components()
    assert components.templates.plugin_of("outline-en") == "ift_engine.default_plugins.templates"
    assert components.models.plugin_of("hf-causal") == "ift_engine.default_plugins.models"
    assert "smollm2-135m-instruct" in components.model_aliases


class Overrider:
    def __init__(self, override: bool):
        self.override = override

    @hookimpl
    def register_templates(self, register):
        register(
            InstructionTemplate(
                name="outline-en",
                task="outline",
                paraphrases=("Plan {topic}",),
                variables=("topic",),
            ),
            override=self.override,
        )


def test_replacing_a_builtin_needs_override():
    pm = build_plugin_manager(load_entry_points=False)
    pm.register(Overrider(override=False), name="my-plugin")
    with pytest.raises(RegistrationError, match="ift_engine.default_plugins.templates"):
        Components.from_plugin_manager(pm)

    pm = build_plugin_manager(load_entry_points=False)
    pm.register(Overrider(override=True), name="my-plugin")
    components = Components.from_plugin_manager(pm)
    assert components.templates.get("outline-en").paraphrases == ("Plan {topic}",)
    assert components.templates.plugin_of("outline-en") == "my-plugin"


def test_entry_point_plugin_loads(site):
    make_distribution(site, "ift-engine-haiku", "ift_haiku_plugin", GOOD_PLUGIN)
    components = plugins.installed_components()
    assert components.templates.plugin_of("haiku-en") == "ift_haiku_plugin"
    rows = {r["name"]: r for r in plugins.describe_plugins(plugins.build_plugin_manager())}
    assert rows["ift_haiku_plugin"]["distribution"] == "ift-engine-haiku"
    assert rows["ift_haiku_plugin"]["version"] == "0.3.1"
    assert rows["ift_haiku_plugin"]["hooks"] == ["register_templates"]


def test_broken_plugin_is_one_warning_naming_its_distribution(site):
    make_distribution(site, "ift-engine-broken", "ift_broken_plugin", "raise ImportError('no such thing')")
    make_distribution(site, "ift-engine-haiku", "ift_haiku_plugin", GOOD_PLUGIN)
    with pytest.warns(PluginLoadWarning) as record:
        components = plugins.installed_components()
    assert len(record) == 1
    assert "ift-engine-broken" in str(record[0].message)
    assert "haiku-en" in components.templates  # the others still load


def test_strict_mode_makes_a_broken_plugin_fatal(site, monkeypatch):
    make_distribution(site, "ift-engine-broken", "ift_broken_plugin", "raise ImportError('nope')")
    monkeypatch.setenv("IFT_ENGINE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="ift-engine-broken"):
        plugins.installed_components()


def test_load_plugins_filter(site, monkeypatch):
    make_distribution(site, "ift-engine-haiku", "ift_haiku_plugin", GOOD_PLUGIN)
    make_distribution(site, "ift-engine-broken", "ift_broken_plugin", "raise ImportError('nope')")
    monkeypatch.setenv("IFT_ENGINE_LOAD_PLUGINS", "ift_haiku_plugin")
    assert "haiku-en" in plugins.installed_components().templates  # and no warning from the broken one
    monkeypatch.setenv("IFT_ENGINE_LOAD_PLUGINS", "")
    components = plugins.installed_components()
    assert "haiku-en" not in components.templates
    assert "outline-en" in components.templates  # built-ins always load


def test_load_plugins_filter_warns_of_a_name_no_plugin_has(site, monkeypatch):
    make_distribution(site, "ift-engine-haiku", "ift_haiku_plugin", GOOD_PLUGIN)
    monkeypatch.setenv("IFT_ENGINE_LOAD_PLUGINS", "ift_haiku_plugin,nosuch")
    with pytest.warns(
        PluginLoadWarning, match="names 'nosuch', but no installed plugin or distribution has that name"
    ):
        assert "haiku-en" in plugins.installed_components().templates


def test_plugin_options_and_settings_reject_unknown_keys(site):
    make_distribution(
        site,
        "ift-engine-lax",
        "ift_lax_plugin",
        """
        from pydantic import BaseModel
        from ift_engine import Model, PluginSettings, hookimpl

        class LaxSettings(BaseModel):  # no extra="forbid": typos would pass silently
            strict: bool = True

        class LaxOptions(BaseModel):
            speed: int = 1

        class LaxModel(Model):
            backend = "lax"
            options_model = LaxOptions
            locates_weights = False

            @classmethod
            def load(cls, name, source, options):
                return cls(name)

        @hookimpl
        def register_settings(register):
            register(PluginSettings("lax", LaxSettings))

        @hookimpl
        def register_models(register):
            register(LaxModel)
        """,
    )
    from ift_engine import Workflow, WorkflowError

    doc = {
        "name": "w",
        "model": {"name": "m", "backend": "lax", "options": {"speed": 2}},
        "plugins": {"lax": {"strict": False}},
        "nodes": [{"id": "a", "instruction": "Hi"}],
    }
    Workflow.from_dict(doc)
    with pytest.raises(
        WorkflowError, match="plugins.lax: strcit: unknown field \\(did you mean 'strict'\\? known: strict\\)"
    ):
        Workflow.from_dict({**doc, "plugins": {"lax": {"strcit": False}}})
    with pytest.raises(WorkflowError, match="option 'sped': Extra inputs are not permitted"):
        Workflow.from_dict({**doc, "model": {"name": "m", "backend": "lax", "options": {"sped": 2}}})


def test_hook_that_raises_is_reported_with_the_plugin_name():
    class Faulty:
        @hookimpl
        def register_parsers(self, register):
            raise RuntimeError("boom")

    pm = build_plugin_manager(load_entry_points=False)
    pm.register(Faulty(), name="faulty")
    with pytest.raises(PluginError, match="plugin 'faulty' failed in register_parsers: RuntimeError: boom"):
        Components.from_plugin_manager(pm)


def run_cli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(site), **env}
    return subprocess.run(
        [sys.executable, "-m", "ift_engine.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
    )


def test_cli_lists_plugins_and_survives_a_broken_one(site):
    make_distribution(site, "ift-engine-haiku", "ift_haiku_plugin", GOOD_PLUGIN)
    # The broken package is installed for real, with pip, into a folder on the path.
    fixture = Path(__file__).parent / "fixtures" / "broken_plugin"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(fixture),
        ],
        check=True,
        capture_output=True,
    )
    done = run_cli(site, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    names = {row["name"]: row for row in json.loads(done.stdout)}
    assert names["ift_haiku_plugin"]["version"] == "0.3.1"
    assert done.stderr.count("warning:") == 1 and "ift-engine-broken" in done.stderr
    assert "broken on purpose" in done.stderr
    failed = [row for row in names.values() if "error" in row]
    assert [row["distribution"] for row in failed] == ["ift-engine-broken"] and "broken on purpose" in failed[
        0
    ]["error"]
    listed = run_cli(site, "plugins")
    assert "ift-engine-broken" in listed.stdout and "failed to load" in listed.stdout
    assert run_cli(site, "--help").returncode == 0

    strict = run_cli(site, "plugins", IFT_ENGINE_STRICT_PLUGINS="1")
    assert strict.returncode == 2
    assert "ift-engine-broken" in strict.stderr and "Traceback" not in strict.stderr


def test_registering_components_does_not_import_torch():
    # Every `ift` command collects the registries; torch + transformers would add seconds.
    code = (
        "import sys; from ift_engine.plugins import components; components(); "
        "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
