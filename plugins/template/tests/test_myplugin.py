"""The installed plugin is found through its entry point and its parts work in a workflow."""

import pytest

from ift_engine import NodeError, Workflow, WorkflowError, plugins


def test_plugin_is_loaded_through_its_entry_point():
    rows = {row["name"]: row for row in plugins.describe_plugins(plugins.build_plugin_manager())}
    assert rows["myplugin"]["distribution"] == "ift-engine-myplugin"
    assert rows["myplugin"]["hooks"] == ["register_parsers", "register_settings", "register_templates"]
    assert plugins.installed_components().templates.plugin_of("yes-no-en") == "myplugin"


def test_template_and_parser_in_a_workflow():
    wf = Workflow.from_dict(
        {
            "name": "ask",
            "inputs": {"question": {}},
            "model": {"name": "mock", "backend": "mock", "options": {"default": "Yes."}},
            "nodes": [
                {
                    "id": "a",
                    "template": "yes-no-en",
                    "parser": "yes_no",
                    "inputs": {"question": "$input.question"},
                }
            ],
        }
    )
    assert wf.run(question="Is water wet?")["a"] is True


def test_settings_under_plugins_in_a_workflow():

    def flow(settings):
        return {
            "name": "ask",
            "inputs": {"question": {}},
            "model": {"name": "mock", "backend": "mock", "options": {"default": "Perhaps."}},
            "plugins": {"myplugin": settings},
            "nodes": [
                {
                    "id": "a",
                    "template": "yes-no-en",
                    "parser": "yes_no",
                    "inputs": {"question": "$input.question"},
                }
            ],
        }

    assert Workflow.from_dict(flow({"strict": False})).run(question="Is it?")["a"] is False
    with pytest.raises(NodeError, match="expected yes or no"):
        Workflow.from_dict(flow({})).run(question="Is it?")
    with pytest.raises(WorkflowError, match=r"plugins.myplugin: strict: Input should be a valid boolean"):
        Workflow.from_dict(flow({"strict": "sometimes"}))
    with pytest.raises(WorkflowError, match=r"plugins.nope: no installed plugin has settings named 'nope'"):
        Workflow.from_dict({**flow({}), "plugins": {"nope": {}}})


def test_cli_lists_the_installed_plugin_with_version_and_hooks():
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ift_engine.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["myplugin"]["version"] == "0.1.0"
    assert rows["myplugin"]["distribution"] == "ift-engine-myplugin"
    assert "register_settings" in rows["myplugin"]["hooks"]
