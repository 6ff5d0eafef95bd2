import pytest
from hypothesis import given
from hypothesis import strategies as st

from ift_engine import AnswerForm, InstructionTemplate, TemplateError
from ift_engine.default_plugins.templates import builtin_templates


def make(*paraphrases: str, variables=("text",), **kw) -> InstructionTemplate:
    return InstructionTemplate(name="demo", task="demo", paraphrases=paraphrases, variables=variables, **kw)


@pytest.mark.parametrize("value", ["{{ x }}", "{x}", "$x", "{text}", "}{", "{{", "\\1 \\g<0>"])
def test_values_are_inserted_literally(value):
    prompt = make("Review: {text} -- end").render({"text": value})
    assert prompt.user_text == f"Review: {value} -- end"


@given(st.text())
def test_any_value_round_trips_literally(value):
    template = make("<{text}>", "{{literal}} {text}")
    assert template.render({"text": value}, paraphrase=0).user_text == f"<{value}>"
    assert template.render({"text": value}, paraphrase=1).user_text == "{literal} " + value


def test_unprovided_placeholder_names_template_and_paraphrase():
    with pytest.raises(TemplateError, match=r"template 'demo', paraphrase 1: placeholder \{other\}"):
        make("Fine {text}", "Broken {text} {other}")


def test_provided_variable_unused_by_a_paraphrase_is_an_error():
    with pytest.raises(TemplateError, match=r"paraphrase 0: variable 'extra' is provided"):
        make("Only {text}", variables=("text", "extra"))


def test_stray_brace_is_an_error():
    with pytest.raises(TemplateError, match="stray '{'"):
        make("Broken { {text}")


def test_label_answer_needs_labels():
    with pytest.raises(TemplateError, match="at least two labels"):
        make("{text}", answer=AnswerForm.LABEL, labels=("only",))


def test_paraphrase_choice_by_index_and_seed():
    template = make(*(f"v{i} {{text}}" for i in range(6)))
    assert template.render({"text": "x"}, paraphrase=3).user_text == "v3 x"
    seeded = {template.render({"text": "x"}, seed=s).paraphrase for s in range(40)}
    assert len(seeded) > 1  # the seed really varies the choice
    assert template.render({"text": "x"}, seed=7) == template.render({"text": "x"}, seed=7)
    with pytest.raises(TemplateError, match="paraphrases 0..5, not 9"):
        template.render({"text": "x"}, paraphrase=9)


def test_missing_value_at_render_time():
    with pytest.raises(TemplateError, match="needs variable 'text'"):
        make("{text}").render({})


def test_list_values_are_written_as_lines():
    prompt = make("Outline:\n{text}").render({"text": ["Intro", "Body"]})
    assert prompt.user_text == "Outline:\nIntro\nBody"


def test_builtin_packs_cover_every_task_in_both_languages():
    templates = builtin_templates()
    by_key = {(t.task, t.language): t for t in templates}
    for task in ("sentiment", "summary", "topic", "outline", "content"):
        for language in ("en", "zh"):
            assert len(by_key[(task, language)].paraphrases) >= 5, (task, language)
    assert by_key[("sentiment", "zh")].labels == ("正面", "负面")
    assert by_key[("outline", "en")].answer is AnswerForm.LINES
