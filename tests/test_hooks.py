"""Every hook is documented in docs/plugins.md with its signature and a worked example, and
every hook has a test of its own here, which runs that documented example as a real plugin."""

from __future__ import annotations

import inspect
import random
import re
import types
from pathlib import Path
from typing import Any

import pytest

from ift_engine import AnswerParser, IftError, ParseError, Workflow, current_settings, hookimpl, hookspecs
from ift_engine.models.resolve import ModelPool
from ift_engine.plugins import Components, build_plugin_manager

GUIDE = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
HOOKS = sorted(name for name, f in vars(hookspecs).items() if name.startswith("register_") and callable(f))


def documented_example(hook: str) -> types.ModuleType:
    """The first Python block under the hook's heading, executed as a plugin module."""
    section = GUIDE.split(f"### `{hook}(register)`", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType(f"example_{hook}")
    exec(compile(code, f"docs/plugins.md:{hook}", "exec"), module.__dict__)
    return module


def components_with(plugin: types.ModuleType) -> Components:
    pm = build_plugin_manager(load_entry_points=False)
    pm.register(plugin, name=plugin.__name__)
    return Components.from_plugin_manager(pm)


def test_every_hook_is_documented_with_its_signature():
    assert HOOKS  # the spec module really has hooks
    for hook in HOOKS:
        signature = str(inspect.signature(getattr(hookspecs, hook))).split(" ->")[0]
        assert re.fullmatch(r"\(register: 'Register\[.+\]'\)", signature), (hook, signature)
        assert f"### `{hook}(register)`" in GUIDE, f"{hook} is missing from docs/plugins.md"


def test_plugin_code_in_the_guide_imports_only_the_plugin_api():
    import ift_engine.plugin

    imports = re.findall(r"^from (ift_engine[\w.]*) import (.+)$", GUIDE, re.M)
    assert imports
    for module, names in imports:
        if module == "ift_engine":  # running a workflow in a plugin's test: the user's API
            assert names == "Workflow", names
            continue
        assert module == "ift_engine.plugin", module
        for name in names.split(", "):
            assert name in ift_engine.plugin.__all__, name


def test_the_bundled_plugins_import_only_the_plugin_api():
    root = Path(__file__).parent.parent / "plugins"
    for path in root.glob("*/ift_engine_*/*.py"):
        modules = set(re.findall(r"^\s*(?:from|import) (ift_engine\b[\w.]*)", path.read_text(), re.M))
        assert modules <= {"ift_engine.plugin"}, (path, modules)


def test_every_hook_has_a_test_of_its_own():
    missing = [hook for hook in HOOKS if f"test_hook_{hook}" not in globals()]
    assert not missing, f"hooks without a test: {missing}"


def test_hook_register_templates():
    components = components_with(documented_example("register_templates"))
    template = components.templates.get("haiku-en")
    assert template.render({"topic": "frogs"}, paraphrase=1).user_text == "Compose a haiku on frogs."


def test_hook_register_parsers():
    components = components_with(documented_example("register_parsers"))
    parser = components.parsers.get("yes_no")
    template = components.templates.get("summary-en")
    assert parser.parse("Yes, it is.", template) is True
    assert parser.output is not None and parser.output(template) == {"type": "boolean"}  # typed edges
    with pytest.raises(ParseError):
        parser.parse("maybe", template)


def test_hook_register_models():
    components = components_with(documented_example("register_models"))
    wf = Workflow.from_dict(
        {
            "name": "s",
            "inputs": {"text": {}},
            "model": {"name": "x", "backend": "shout"},
            "nodes": [{"id": "n", "instruction": "say {text}", "inputs": {"text": "$input.text"}}],
        },
        components=components,
    )
    assert wf.run(text="hi")["n"] == "SAY HI"


def test_hook_register_model_aliases(tmp_path):
    components = components_with(documented_example("register_model_aliases"))
    alias = components.model_aliases.get("team-model")
    assert alias.backend == "hf-causal" and str(alias.locate()) == "/models/team-model"


def test_hook_register_augmenters():
    components = components_with(documented_example("register_augmenters"))
    cls = components.augmenters.get("reverse_words")
    augmenter = cls(cls.options_model(rate=1.0), components)
    assert augmenter.augment("one two three", random.Random(0)) == "three two one"


def test_hook_register_lexicons():
    components = components_with(documented_example("register_lexicons"))
    lexicon = components.lexicons.get("en-sports")
    assert lexicon.of("victory") == ("win",)  # made symmetric


def test_hook_register_datasets():
    components = components_with(documented_example("register_datasets"))
    source = components.datasets.get("counting")
    records = list(source.records(source.options_model(n=3)))
    assert records[-1] == {"prompt": "What comes after 2?", "completion": "3"}


def test_hook_register_ensemblers():
    components = components_with(documented_example("register_ensemblers"))
    pool = ModelPool(components)
    wf = Workflow.from_dict(
        {
            "name": "e",
            "inputs": {"text": {}},
            "model": {
                "ensemble": "max_prob",
                "members": [
                    {"name": "a", "backend": "mock", "options": {"default": "positive"}},
                    {"name": "b", "backend": "mock", "options": {"default": "neither"}},
                ],
            },
            "nodes": [{"id": "n", "template": "sentiment-en", "inputs": {"text": "$input.text"}}],
        },
        pool=pool,
    )
    assert wf.run(text="fine")["n"] == "positive"


def test_hook_register_settings():
    components = components_with(documented_example("register_settings"))
    doc = {
        "name": "s",
        "inputs": {"x": {}},
        "model": {"name": "m", "backend": "mock"},
        "nodes": [{"id": "n", "instruction": "Say {x}", "inputs": {"x": "$input.x"}, "parser": "shout"}],
    }
    assert (
        Workflow.from_dict({**doc, "plugins": {"shout": {"suffix": "?!"}}}, components=components).run(
            x="hi"
        )["n"]
        == "SAY HI?!"
    )
    assert Workflow.from_dict(doc, components=components).run(x="hi")["n"] == "SAY HI!"


def test_settings_read_without_their_model_are_the_registered_defaults_in_any_run():
    """A workflow built with its own components, not configuring the plugin: the plugin's
    registered defaults, not the process-wide components."""
    example = documented_example("register_settings")  # registers "shout" with ShoutSettings
    module = types.ModuleType("bare_settings")
    module.register_settings = example.register_settings

    @hookimpl
    def register_parsers(register: Any) -> None:
        register(AnswerParser("bare", lambda answer, template: answer + current_settings("shout").suffix))

    module.register_parsers = register_parsers
    doc = {
        "name": "s",
        "inputs": {"x": {}},
        "model": {"name": "m", "backend": "mock"},
        "nodes": [{"id": "n", "instruction": "Say {x}", "inputs": {"x": "$input.x"}, "parser": "bare"}],
    }
    assert Workflow.from_dict(doc, components=components_with(module)).run(x="hi")["n"] == "Say hi!"
    with pytest.raises(IftError, match="no workflow run configures them here"):
        current_settings("shout")
