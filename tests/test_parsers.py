import pytest

from ift_engine import InstructionTemplate, ParseError
from ift_engine.parsers import parse_json, parse_label, parse_lines

LABELS = InstructionTemplate(
    name="s",
    task="s",
    paraphrases=("{t}",),
    variables=("t",),
    answer="label",
    labels=("positive", "negative"),
)


def test_lines_drop_bullets_numbering_and_blanks():
    answer = "1. Intro\n\n- How bees dance\n* Smell\n2) Sound\n一、历史\n## Summary"
    assert parse_lines(answer, LABELS) == [
        "Intro",
        "How bees dance",
        "Smell",
        "Sound",
        "历史",
        "Summary",
    ]


def test_lines_empty_is_an_error():
    with pytest.raises(ParseError):
        parse_lines("  \n\n", LABELS)


def test_json_is_found_inside_chatter_and_fences():
    assert parse_json('Sure! ```json\n{"a": [1, 2]}\n``` hope it helps', LABELS) == {"a": [1, 2]}
    assert parse_json("broken { then [1, 2]", LABELS) == [1, 2]
    with pytest.raises(ParseError, match="no JSON"):
        parse_json("nothing here", LABELS)


def test_label_is_the_first_named_label():
    assert parse_label("Negative, not positive.", LABELS) == "negative"
    assert parse_label("It is POSITIVE", LABELS) == "positive"
    with pytest.raises(ParseError, match="names none of the labels"):
        parse_label("neutral", LABELS)
