"""Conditions (``when:``, ``repeat.until``) and loops (``repeat:``): declared forms parsed when
the file loads and evaluated by the runner, never ``eval``-ed.

A comparison reads one value, a workflow input (``input: NAME``) or a node's output (``node: ID``,
with an optional ``path: a.b.0`` into a mapping or list), and compares it: ``equals: V``,
``in: [V, ...]`` or ``is: true | false | null``. Comparisons combine with ``all: [...]``,
``any: [...]`` and ``not: ...``. A skipped node's output reads as null.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

#: How deeply ``all``/``any``/``not`` may nest, and how many comparisons one condition may hold:
#: far more than a readable condition needs, few enough to check and draw at once.
MAX_CONDITION_DEPTH = 8
MAX_COMPARISONS = 64
MAX_PATH_PARTS = 16
#: Runs of one repeated node at most (its first run included).
MAX_REPEAT = 10
COMPARISONS = ("equals", "in", "is")

#: How a condition reads a value: ``("input", name)`` or ``("node", id)`` -> the value.
ValueOf = Callable[[str, str], Any]


class Comparison(BaseModel):
    """One comparison: ``{node: X, equals: V}``, ``{input: lang, in: [zh, en]}``,
    ``{node: check, path: valid, is: true}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    node: str | None = Field(None, min_length=1, description="the node whose output is tested")
    input: str | None = Field(None, min_length=1, description="the workflow input that is tested")
    path: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="keys (and list indices) into the value, dot-separated",
    )
    equals: Any = Field(None, description="the value equals this one")
    in_: list[Any] | None = Field(None, alias="in", max_length=1000, description="the value is one of these")
    is_: Literal[True, False] | None = Field(None, alias="is", description="the value is true, false or null")

    @field_validator("is_", mode="before")
    @classmethod
    def _constant(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, bool):
            raise ValueError(
                f"'is' takes true, false or null, not {value!r}; compare other values with 'equals'"
            )
        return value

    @field_validator("path")
    @classmethod
    def _path_parts(cls, value: str | None) -> str | None:
        if value is not None:
            parts = value.split(".")
            if "" in parts or len(parts) > MAX_PATH_PARTS:
                raise ValueError(
                    f"path {value!r} must be up to {MAX_PATH_PARTS} non-empty keys separated by dots, "
                    "e.g. 'valid' or 'items.0.name'"
                )
        return value

    @model_validator(mode="after")
    def _one_subject_one_comparison(self) -> Comparison:
        if (self.node is None) == (self.input is None):
            raise ValueError("a comparison reads exactly one of 'node' or 'input'")
        given = [name for name in COMPARISONS if self._given(name)]
        if len(given) != 1:
            raise ValueError(
                "a comparison is exactly one of 'equals', 'in' or 'is' "
                f"({'none' if not given else ', '.join(given)} given); combine several with all/any/not"
            )
        return self

    def _given(self, comparison: str) -> bool:
        field = {"in": "in_", "is": "is_"}.get(comparison, comparison)
        return field in self.model_fields_set

    @model_serializer
    def _as_written(self) -> dict[str, Any]:
        # The fields given, by the names the file uses: `is: null` and `equals: null` survive
        # a round trip that drops defaults.
        names = {"in_": "in", "is_": "is"}
        return {
            names.get(f, f): getattr(self, f) for f in type(self).model_fields if f in self.model_fields_set
        }

    def value(self, value_of: ValueOf) -> Any:
        """The value tested: the input or output, followed along ``path`` (null where it leads
        nowhere)."""
        value = value_of("node", self.node) if self.node is not None else value_of("input", self.input or "")
        for key in (self.path or "").split(".") if self.path else ():
            if isinstance(value, dict):
                value = value.get(key)
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                return None
        return value

    def holds(self, value_of: ValueOf) -> bool:
        value = self.value(value_of)
        if self._given("is"):
            return value is self.is_
        if self._given("in"):
            return any(same(value, option) for option in self.in_ or ())
        return same(value, self.equals)

    def describe(self) -> str:
        subject = f"{self.node}" if self.node is not None else f"${self.input}"
        if self.path:
            subject += f".{self.path}"
        if self._given("is"):
            return f"{subject} is {shown(self.is_)}"
        if self._given("in"):
            return f"{subject} in [{', '.join(shown(v) for v in self.in_ or ())}]"
        return f"{subject} = {shown(self.equals)}"


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    all: list[Condition] = Field(min_length=1, description="every condition holds")


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    any: list[Condition] = Field(min_length=1, description="at least one condition holds")


class NotOf(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    not_: Condition = Field(alias="not", description="the condition does not hold")


def _form(value: Any) -> str:
    """Which form a condition is written in (the tags are capitalised, so error locations leave
    them out)."""
    forms: dict[type[BaseModel], str] = {AllOf: "All", AnyOf: "Any", NotOf: "Not"}
    if isinstance(value, BaseModel):
        return forms.get(type(value), "Comparison")
    if isinstance(value, dict):
        for key, tag in (("all", "All"), ("any", "Any"), ("not", "Not")):
            if key in value:
                return tag
    return "Comparison"


Condition = Annotated[
    Annotated[Comparison, Tag("Comparison")]
    | Annotated[AllOf, Tag("All")]
    | Annotated[AnyOf, Tag("Any")]
    | Annotated[NotOf, Tag("Not")],
    Discriminator(_form),
]
for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()


def check_condition_size(value: Any) -> Any:
    """``value`` (a condition as written), or ``ValueError`` when it nests more than
    ``MAX_CONDITION_DEPTH`` levels or holds more than ``MAX_COMPARISONS`` comparisons. Checked
    before the condition is parsed, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    count = 0
    while stack:
        item, depth = stack.pop()
        if depth > MAX_CONDITION_DEPTH:
            raise ValueError(f"conditions nest more than {MAX_CONDITION_DEPTH} levels deep; flatten it")
        if not isinstance(item, dict):
            continue
        children = [item[k] for k in ("all", "any", "not") if k in item]
        if not children:
            count += 1
            if count > MAX_COMPARISONS:
                raise ValueError(
                    f"a condition holds at most {MAX_COMPARISONS} comparisons; split the decision"
                )
        for child in children:
            stack.extend((c, depth + 1) for c in (child if isinstance(child, list) else [child]))
    return value


def comparisons(condition: Any) -> Iterator[Comparison]:
    """Every comparison in a condition."""
    stack = [condition]
    while stack:
        item = stack.pop()
        if isinstance(item, Comparison):
            yield item
        elif isinstance(item, NotOf):
            stack.append(item.not_)
        else:
            stack.extend(reversed(item.all if isinstance(item, AllOf) else item.any))


def holds(condition: Any, value_of: ValueOf) -> bool:
    """Whether the condition holds for the values ``value_of`` reads."""
    if isinstance(condition, Comparison):
        return condition.holds(value_of)
    if isinstance(condition, NotOf):
        return not holds(condition.not_, value_of)
    if isinstance(condition, AllOf):
        return all(holds(c, value_of) for c in condition.all)
    return any(holds(c, value_of) for c in condition.any)


def describe(condition: Any) -> str:
    """The condition as short text, for drawings: ``sentiment = 负面``, ``not (a or b)``."""
    if isinstance(condition, Comparison):
        return condition.describe()
    if isinstance(condition, NotOf):
        return f"not ({describe(condition.not_)})"
    parts, joiner = (condition.all, " and ") if isinstance(condition, AllOf) else (condition.any, " or ")
    texts = [describe(c) if isinstance(c, Comparison) else f"({describe(c)})" for c in parts]
    return joiner.join(texts)


def same(value: Any, expected: Any) -> bool:
    """Equality that keeps booleans apart from numbers (``true`` is not ``1``)."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value is expected
    return bool(value == expected)


def shown(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


class RepeatSpec(BaseModel):
    """Run a node again (with ``$self.output``, its previous output, and ``$self.iteration``)
    until ``until`` holds or ``max`` runs are done."""

    model_config = ConfigDict(extra="forbid")

    max: StrictInt = Field(
        ge=1, le=MAX_REPEAT, description=f"runs at most, the first included (at most {MAX_REPEAT})"
    )
    until: Condition | None = Field(None, description="stop once this holds (checked after each run)")

    @field_validator("until", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        return check_condition_size(value)


def condition_nodes(condition: Any) -> list[str]:
    """The nodes a condition (or None) reads, in order, once each."""
    if condition is None:
        return []
    return list(dict.fromkeys(t.node for t in comparisons(condition) if t.node is not None))
