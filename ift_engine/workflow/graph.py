"""From a ``WorkflowSpec`` to a validated ``networkx.DiGraph`` of nodes.

Validation resolves every name through the registries (templates, parsers, model backends and
their options) without loading a model, so a bad workflow fails in milliseconds with a message
that names the file, the node and the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import BaseModel

from ..documents import decode_utf8, loads_json, read_bytes, value_problem
from ..errors import ConstraintError, IftError, ModelError, TemplateError, WorkflowError
from ..models.adapters import AdapterError
from ..models.base import GenerationSettings
from ..models.resolve import EnsembleSpec, ModelPool, ModelSpec
from ..parsers import AnswerParser
from ..plugins import Components
from ..structured import MAX_SCHEMA_BYTES, Constraint, answer_constraint
from ..templates import AnswerForm, InstructionTemplate
from ..validation import validate_document
from .decisions import comparisons, condition_nodes
from .drawing import drawn_edges, node_notes
from .spec import InputSource, NodeSpec, WorkflowSpec, input_source, reference

#: Repeated nodes a workflow may have: finding each loop walks the graph once.
MAX_REPEATS = 100

#: Per answer form: the field that narrows it, and how errors name that.
NARROWED = {
    AnswerForm.JSON: ("schema", "answer: json with a schema"),
    AnswerForm.LINES: ("items", "answer: lines with items"),
    AnswerForm.TEXT: ("regex", "an answer with a regex"),
    AnswerForm.LABEL: ("labels", "answer: label"),
}


@dataclass(frozen=True)
class BoundNode:
    """A node with every name resolved: what the runner needs to execute it."""

    spec: NodeSpec
    template: InstructionTemplate
    parser: AnswerParser
    model: ModelSpec | EnsembleSpec
    generation: GenerationSettings
    dependencies: tuple[str, ...]
    sources: dict[str, InputSource]
    #: What decoding is limited to (the template's schema, labels, line count or regex).
    constraint: Constraint | None = None


class WorkflowGraph:
    """The validated DAG. ``graph`` has one vertex per node id (attribute ``node``: BoundNode)
    and an edge ``a -> b`` when ``b`` reads ``a.output``."""

    def __init__(self, spec: WorkflowSpec, components: Components, pool: ModelPool, source: str):
        self.spec = spec
        self.source = source
        self._components = components
        self._pool = pool
        self._checked: set[str] = set()  # model specs already checked: big graphs share a few
        self.graph = nx.DiGraph()
        self.plugin_settings = self._plugin_settings()
        self._build()

    def _error(self, message: str, node: str | None = None, field: str | None = None) -> WorkflowError:
        where = self.source
        if node is not None:
            where += f": node '{node}'"
        if field is not None:
            where += f", field '{field}'"
        return WorkflowError(f"{where}: {message}")

    def _build(self) -> None:
        ids: set[str] = set()
        for node in self.spec.nodes:
            if node.id in ids:
                raise self._error(f"duplicate node id '{node.id}': node ids must be unique")
            ids.add(node.id)
        for node in self.spec.nodes:
            self.graph.add_node(node.id, node=self._bind(node, ids))
        for node_id, data in self.graph.nodes(data=True):
            for dependency in data["node"].dependencies:
                self.graph.add_edge(dependency, node_id)
        self._check_acyclic()
        self._find_repeats()
        for name, ref in self.spec.outputs.items():
            kind = reference(ref)
            if kind is None or kind[0] != "node" or kind[1] not in self.graph:
                raise self._error(
                    f"output '{name}' must be NODE.output for a known node, not {ref!r} "
                    f"(nodes: {', '.join(sorted(ids)[:20])})"
                )

    def _check_acyclic(self) -> None:
        if nx.is_directed_acyclic_graph(self.graph):  # linear; find_cycle is not, on big graphs
            return
        cycle = nx.find_cycle(self.graph)
        path = " -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
        for source, target in cycle:
            spec = self.node(target).spec
            until = spec.repeat.until if spec.repeat else None
            for field, condition in (("when", spec.when), ("repeat.until", until)):
                if source in condition_nodes(condition):
                    raise self._error(
                        f"the condition reads node '{source}', which depends on this node (cycle: {path}); "
                        "a condition reads workflow inputs and earlier nodes",
                        target,
                        field,
                    )
        raise self._error(f"the nodes form a cycle: {path}; a workflow must be acyclic")

    def _find_repeats(self) -> None:
        """Each repeated node's loop (``repeats``: head -> its members). A node's ``until`` may
        read nodes that depend on it (a check of its answer): those nodes, and every node between,
        run again with it. Any other node the condition reads is an earlier one, an edge here."""
        self.repeats: dict[str, frozenset[str]] = {}
        self.repeat_of: dict[str, str] = {}  # member -> the head of its loop
        #: head -> the later nodes its until reads (the ends of its loop)
        self.checks: dict[str, set[str]] = {}
        heads = [n for n, data in self.graph.nodes(data=True) if data["node"].spec.repeat is not None]
        if len(heads) > MAX_REPEATS:
            raise self._error(
                f"{len(heads):,} nodes repeat; a workflow has at most {MAX_REPEATS}: split it into several"
            )
        index = {node_id: i for i, node_id in enumerate(self.order())}
        for head in heads:
            repeat = self.node(head).spec.repeat
            read = set(condition_nodes(repeat.until if repeat else None)) - {head}
            self.checks[head] = read & self._between(head, read, index)
            self.graph.add_edges_from((n, head) for n in read - self.checks[head])
        self._check_acyclic()
        index = {node_id: i for i, node_id in enumerate(self.order())}
        for head in sorted(heads, key=index.__getitem__):
            members = self._between(head, self.checks[head], index)
            for member in sorted(members - {head}, key=index.__getitem__):
                if self.node(member).spec.repeat is not None:
                    raise self._error(
                        f"this node runs inside the repeat of '{head}' (between it and the nodes its until "
                        "reads), so it cannot repeat on its own; one loop at a time",
                        member,
                        "repeat",
                    )
                if member in self.repeat_of:
                    raise self._error(
                        f"this node runs inside the repeats of both '{self.repeat_of[member]}' and '{head}'; "
                        "a node belongs to one loop at most",
                        member,
                    )
                self.repeat_of[member] = head
            self.repeats[head] = frozenset(members)
            self.repeat_of[head] = head

    def _between(self, head: str, ends: set[str], index: dict[str, int]) -> set[str]:
        """``head``, ``ends`` and every node on a path between them. The search stays among the
        nodes that come after ``head`` in ``index`` (a topological order)."""
        reach = set()
        stack = list(ends)
        while stack:
            node_id = stack.pop()
            if node_id not in reach:
                reach.add(node_id)
                stack.extend(p for p in self.graph.predecessors(node_id) if index[p] > index[head])
        members, stack = {head}, [head]
        while stack:
            for successor in self.graph.successors(stack.pop()):
                if successor in reach and successor not in members:
                    members.add(successor)
                    stack.append(successor)
        return members

    def _plugin_settings(self) -> dict[str, BaseModel]:
        """Each configured plugin's settings, validated by the model the plugin registered."""
        registry = self._components.settings
        settings = {}
        for name, values in self.spec.plugins.items():
            if name not in registry:
                raise self._error(
                    f"plugins.{name}: no installed plugin has settings named '{name}' "
                    f"(known: {registry.known()})"
                )
            settings[name] = validate_document(
                registry.get(name).model, values, f"{self.source}: plugins.{name}", WorkflowError
            )
        return settings

    def _model_spec(self, ref: Any) -> ModelSpec:
        if isinstance(ref, ModelSpec):
            return ref
        return self.spec.models.get(ref) or ModelSpec(name=ref)

    def _model_ref(
        self, ref: Any, backend: str | None, node: str, within: str | None = None
    ) -> ModelSpec | EnsembleSpec:
        """A node's model reference with names resolved and a backend switch applied. An
        ensemble's members are models: an ensemble named among them (nested, or a cycle) is an
        error."""
        if isinstance(ref, str) and ref in self.spec.ensembles:
            if within is not None:
                raise self._error(
                    f"ensemble '{within}' lists the ensemble '{ref}' as a member; members are models: "
                    "list that ensemble's models instead",
                    node,
                    "model",
                )
            within, ref = ref, self.spec.ensembles[ref]
        if isinstance(ref, EnsembleSpec):
            name = within or ref.ensemble
            members = tuple(self._model_ref(m, backend, node, name) for m in ref.members)
            return EnsembleSpec(ensemble=ref.ensemble, members=members, weights=ref.weights)
        model = self._model_spec(ref)
        if backend and backend != model.backend:
            # Options belong to the backend they were written for; a switched backend starts clean.
            model = ModelSpec(name=model.name, backend=backend, adapter=model.adapter)
        return model

    def _bind(self, node: NodeSpec, ids: set[str]) -> BoundNode:
        components = self._components
        try:
            if node.template is not None:
                template = components.templates.get(node.template)
            else:
                template = InstructionTemplate.inline(
                    node.id,
                    node.instruction or "",
                    node.answer or AnswerForm.TEXT,
                    node.labels or (),
                    **self._narrowed(node),
                )
        except IftError as exc:
            field = "template" if node.template is not None else "instruction"
            raise self._error(str(exc), node.id, field) from None

        try:
            template.pick(node.paraphrase)  # an index the template has, checked at load
        except IftError as exc:
            raise self._error(str(exc), node.id, "paraphrase") from None
        provided, needed = set(node.inputs), set(template.variables)
        if needed - provided:
            missing = sorted(needed - provided)[0]
            raise self._error(
                f"template '{template.name}' needs input '{missing}'; add it under inputs",
                node.id,
                "inputs",
            )
        if provided - needed:
            extra = sorted(provided - needed)[0]
            raise self._error(
                f"input '{extra}' is not used by template '{template.name}' "
                f"(it uses: {', '.join(template.variables) or 'nothing'})",
                node.id,
                "inputs",
            )
        sources = self._sources(node, ids)
        dependencies = [ref[1] for source in sources.values() for ref in source.refs if ref[0] == "node"]
        dependencies += self._condition_nodes(node, node.when, "when", ids)
        if node.repeat is not None:
            self._condition_nodes(node, node.repeat.until, "repeat.until", ids)

        if node.parser is not None and template.answer is AnswerForm.LABEL:
            raise self._error(
                f"template '{template.name}' answers with one of its labels, which no parser "
                "changes; remove 'parser', or use a text template to parse free answers",
                node.id,
                "parser",
            )
        parser_name = node.parser or template.answer.value
        try:
            parser = components.parsers.get(parser_name)
        except IftError as exc:
            raise self._error(str(exc), node.id, "parser") from None

        model_ref = node.model if node.model is not None else self.spec.model
        if model_ref is None:
            raise self._error("no model: set 'model' on the node or on the workflow", node.id, "model")
        model = self._model_ref(model_ref, node.backend or self.spec.backend, node.id)
        try:
            if isinstance(model, EnsembleSpec):
                self._pool.check_ensemble(model)
                wanted = self._components.ensemblers.get(model.ensemble).capability
                if (wanted == "classify") != (template.answer is AnswerForm.LABEL):
                    raise ModelError(
                        f"ensemble '{model.ensemble}' combines "
                        f"{'labels' if wanted == 'classify' else 'generated text'}, but template "
                        f"'{template.name}' answers with {template.answer.value}"
                    )
            elif model.key() not in self._checked:
                self._pool.check(model)
                self._checked.add(model.key())
        except AdapterError as exc:
            raise self._error(str(exc), node.id, f"model.{exc.field}") from None
        except (ModelError, TemplateError) as exc:
            raise self._error(str(exc), node.id, "model") from None

        constraint = self._constraint(node, template, model)
        overrides = {
            **self.spec.generation.model_dump(exclude_none=True),
            **node.generation.model_dump(exclude_none=True),
        }
        generation = GenerationSettings(**overrides)
        return BoundNode(
            node, template, parser, model, generation, tuple(dict.fromkeys(dependencies)), sources, constraint
        )

    def _sources(self, node: NodeSpec, ids: set[str]) -> dict[str, InputSource]:
        """Where each of the node's inputs comes from, every reference checked."""
        sources = {}
        for variable, value in node.inputs.items():
            field = f"inputs.{variable}"
            try:
                source = input_source(value)
            except ValueError as exc:
                raise self._error(str(exc), node.id, field) from None
            for kind, name in source.refs:
                if kind == "input" and name not in self.spec.inputs:
                    raise self._error(
                        f"$input.{name} is not a declared workflow input "
                        f"(declared: {', '.join(self.spec.inputs) or 'none'})",
                        node.id,
                        field,
                    )
                if kind == "node" and name not in ids:
                    raise self._error(
                        f"{name}.output refers to unknown node '{name}' "
                        f"(nodes: {', '.join(sorted(ids)[:20])})",
                        node.id,
                        field,
                    )
                if kind == "self" and node.repeat is None:
                    raise self._error(
                        f"$self.{name} reads this node's previous run: give the node 'repeat:'",
                        node.id,
                        field,
                    )
            if source.refs == (("self", "output"),) and not source.has_default:
                raise self._error(
                    "$self.output has no value on the first run: give a default "
                    "({from: $self.output, default: ''}) or write {first_of: [$self.output, NODE.output]}",
                    node.id,
                    field,
                )
            sources[variable] = source
        return sources

    def _condition_nodes(self, node: NodeSpec, condition: Any, field: str, ids: set[str]) -> list[str]:
        """The nodes a condition reads (the node itself left out), every name checked."""
        nodes = []
        for test in comparisons(condition) if condition is not None else ():
            if test.input is not None and test.input not in self.spec.inputs:
                raise self._error(
                    f"input '{test.input}' is not a declared workflow input "
                    f"(declared: {', '.join(self.spec.inputs) or 'none'})",
                    node.id,
                    field,
                )
            if test.node is None:
                continue
            if test.node not in ids:
                raise self._error(
                    f"unknown node '{test.node}' (nodes: {', '.join(sorted(ids)[:20])})", node.id, field
                )
            if test.node == node.id:
                if field == "when":
                    raise self._error(
                        "a node's condition cannot read its own output, which does not exist yet; "
                        "test it after each run with repeat.until",
                        node.id,
                        field,
                    )
                continue
            nodes.append(test.node)
        return nodes

    def _narrowed(self, node: NodeSpec) -> dict[str, Any]:
        """An inline instruction's schema (read from its file where it names one), regex and
        line count, those it gives."""
        narrowed = {"schema": node.answer_schema, "regex": node.regex, "items": node.items}
        if isinstance(node.answer_schema, str):
            folder = Path(self.source).parent if Path(self.source).is_file() else Path.cwd()
            narrowed["schema"] = self._schema_file(folder / node.answer_schema, node.id)
        return {name: value for name, value in narrowed.items() if value is not None}

    def _schema_file(self, path: Path, node: str) -> Any:
        try:
            data = read_bytes(path, "schema file", WorkflowError, MAX_SCHEMA_BYTES)
            return loads_json(decode_utf8(data, str(path), WorkflowError))
        except WorkflowError as exc:
            raise self._error(str(exc), node, "schema") from None
        except ValueError as exc:
            raise self._error(f"{path}: not valid JSON ({value_problem(exc)})", node, "schema") from None
        except RecursionError:
            raise self._error(f"{path}: nested too deeply to read", node, "schema") from None

    def _constraint(
        self, node: NodeSpec, template: InstructionTemplate, model: ModelSpec | EnsembleSpec
    ) -> Constraint | None:
        """The node's constraint, checked, on a model that can decode under it. A label answer
        is scored, or generated under its constraint where the model can; on others it is
        found in free text, as before."""
        field, what = NARROWED[template.answer]
        field = field if node.template is None else "template"
        try:
            constraint = answer_constraint(template)
        except ConstraintError as exc:
            raise self._error(str(exc), node.id, field) from None
        if constraint is None or template.answer is AnswerForm.LABEL:
            return constraint
        if isinstance(model, EnsembleSpec):
            raise self._error(f"{what} is not supported by ensembles; give the node a model", node.id, field)
        backend = self._pool.backend_for(model)
        if not backend.structured_outputs:
            raise self._error(
                f"{what} is not supported by backend '{backend.backend}'; use hf-causal or onnx",
                node.id,
                field,
            )
        return constraint

    def node(self, node_id: str) -> BoundNode:
        return self.graph.nodes[node_id]["node"]

    def order(self) -> list[str]:
        return list(nx.topological_sort(self.graph))

    def sinks(self) -> list[str]:
        return [n for n in self.order() if self.graph.out_degree(n) == 0]

    def outputs(self) -> dict[str, str]:
        """Declared outputs, or every sink node's output under its own id."""
        if self.spec.outputs:
            return {name: reference(ref)[1] for name, ref in self.spec.outputs.items()}  # type: ignore[index]
        return {node_id: node_id for node_id in self.sinks()}

    def mermaid(self) -> str:
        """A Mermaid flowchart of the workflow: inputs, nodes (template, model), outputs. Vertex
        names are prefixed and made safe (a node called ``end`` is a Mermaid keyword); labels
        show the names as written."""
        inputs = mermaid_ids("in", self.spec.inputs)
        nodes = mermaid_ids("n", self.order())
        outputs = mermaid_ids("out", self.outputs())
        lines = ["flowchart TD"]
        for name, vertex in inputs.items():
            lines.append(f'    {vertex}[/"{mermaid_text(name)}"/]')
        for node_id, vertex in nodes.items():
            bound = self.node(node_id)
            label = f"{node_id}<br/>{mermaid_text(bound.template.name)} · {mermaid_text(bound.model.name)}"
            for note in node_notes(self, node_id):
                label += f"<br/>{mermaid_text(note)}"
            lines.append(f'    {vertex}["{label}"]')
        vertices = {**nodes, **{f"${name}": vertex for name, vertex in inputs.items()}}
        for source, target, note, back in drawn_edges(self):
            arrow = "-.->" if back else "-->"
            shown = f'|"{mermaid_text(note)}"|' if note else ""
            lines.append(f"    {vertices[source]} {arrow}{shown} {nodes[target]}")
        for name, node_id in self.outputs().items():
            lines.append(f'    {nodes[node_id]} --> {outputs[name]}[\\"{mermaid_text(name)}"\\]')
        return "\n".join(lines) + "\n"


def mermaid_ids(prefix: str, names: Iterable[str]) -> dict[str, str]:
    """A unique Mermaid vertex name per name: the prefix, then the name's letters and digits."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        vertex = f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
        while vertex in used:
            vertex += "_"
        used.add(vertex)
        ids[name] = vertex
    return ids


def mermaid_text(text: str) -> str:
    """Text for inside a quoted Mermaid label: quotes, angle brackets and # as entity codes."""
    return "".join(f"#{ord(c)};" if c in '"<>&#' else c for c in str(text))
