import pytest

from ift_engine import InstructionTemplate, RegistrationError
from ift_engine.errors import IftError
from ift_engine.registry import Registry


def template(name: str, text: str = "Say {x}") -> InstructionTemplate:
    return InstructionTemplate(name=name, task="t", paraphrases=(text,), variables=("x",))


def test_collision_names_both_plugins():
    registry = Registry("template", InstructionTemplate, lambda t: t.name)
    registry.add(template("greet"), "first-plugin")
    with pytest.raises(RegistrationError) as info:
        registry.add(template("greet"), "second-plugin")
    message = str(info.value)
    assert "first-plugin" in message and "second-plugin" in message and "override=True" in message


def test_override_replaces_and_records_the_new_plugin():
    registry = Registry("template", InstructionTemplate, lambda t: t.name)
    registry.add(template("greet"), "builtin")
    replacement = template("greet", "Hello {x}")
    registry.add(replacement, "third-party", override=True)
    assert registry.get("greet") is replacement
    assert registry.plugin_of("greet") == "third-party"


def test_wrong_type_is_rejected():
    registry = Registry("template", InstructionTemplate, lambda t: t.name)
    with pytest.raises(RegistrationError, match="must be a InstructionTemplate"):
        registry.add("not a template", "p")  # type: ignore[arg-type]


def test_unknown_name_lists_known_names():
    registry = Registry("template", InstructionTemplate, lambda t: t.name)
    registry.add(template("a"), "p")
    registry.add(template("b"), "p")
    with pytest.raises(IftError, match=r"unknown template 'c' \(known: a, b\)"):
        registry.get("c")
