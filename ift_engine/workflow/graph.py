"""From a ``WorkflowSpec`` to a validated ``networkx.DiGraph`` of nodes.

Validation resolves every name through the registries (templates, parsers, model backends and
their options) without loading a model, so a bad workflow fails in milliseconds with a message
that names the file, the node and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import BaseModel, ValidationError

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
from .bound import BoundNode
from .references import condition_nodes, node_sources
from .repeats import check_acyclic, find_repeats
from .spec import NodeSpec, WorkflowSpec, reference
from .typecheck import check_types
from .value_types import mapped

#: Per answer form: the field that narrows it, and how errors name that.
NARROWED = {
    AnswerForm.JSON: ("schema", "answer: json with a schema"),
    AnswerForm.LINES: ("items", "answer: lines with items"),
    AnswerForm.TEXT: ("regex", "an answer with a regex"),
    AnswerForm.LABEL: ("labels", "answer: label"),
}


class WorkflowGraph:
    """The validated DAG. ``graph`` has one vertex per node id (attribute ``node``: BoundNode)
    and an edge ``a -> b`` when ``b`` reads ``a.output``."""

    def __init__(self, spec: WorkflowSpec, components: Components, pool: ModelPool, source: str):
        self.spec = spec
        self.source = source
        self._components = components.with_templates(spec.templates, WorkflowError, source)
        self._pool = pool
        self._checked: set[str] = set()  # model specs already checked: big graphs share a few
        self.graph = nx.DiGraph()
        self.plugin_settings = self._plugin_settings()
        #: What ``current_settings`` finds during a run: every registered plugin's defaults,
        #: under what the workflow configures (the cache key holds only the configured ones).
        self.settings_in_run = {**self._default_settings(), **self.plugin_settings}
        self._build()

    def error(self, message: str, node: str | None = None, field: str | None = None) -> WorkflowError:
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
                raise self.error(f"duplicate node id '{node.id}': node ids must be unique")
            ids.add(node.id)
        for node in self.spec.nodes:
            self.graph.add_node(node.id, node=self._bind(node, ids))
        for node_id, data in self.graph.nodes(data=True):
            for dependency in data["node"].dependencies:
                self.graph.add_edge(dependency, node_id)
        check_acyclic(self.graph, self.error)
        loops = find_repeats(self.graph, self.error)
        self.repeats, self.repeat_of, self.checks = loops.repeats, loops.repeat_of, loops.checks
        for name, ref in self.spec.outputs.items():
            kind = reference(ref)
            if kind is None or kind[0] != "node" or kind[1] not in self.graph:
                raise self.error(
                    f"output '{name}' must be NODE.output for a known node, not {ref!r} "
                    f"(nodes: {', '.join(sorted(ids)[:20])})"
                )
        check_types({n: self.node(n) for n in self.graph}, self.spec.inputs, self.error)

    def _default_settings(self) -> dict[str, BaseModel]:
        """Each registered plugin's default settings (those whose model has defaults)."""
        registry = self._components.settings
        defaults = {}
        for name in registry.names():
            try:
                defaults[name] = registry.get(name).model()
            except ValidationError:  # required fields: only a workflow that sets them has them
                continue
        return defaults

    def _plugin_settings(self) -> dict[str, BaseModel]:
        """Each configured plugin's settings, validated by the model the plugin registered."""
        registry = self._components.settings
        settings = {}
        for name, values in self.spec.plugins.items():
            if name not in registry:
                raise self.error(
                    f"plugins.{name}: no installed plugin has settings named '{name}' "
                    f"(known: {registry.known()})"
                )
            settings[name] = validate_document(
                registry.get(name).model, values, f"{self.source}: plugins.{name}", WorkflowError
            )
        return settings

    def _model_spec(self, ref: Any) -> ModelSpec:
        if not isinstance(ref, ModelSpec):
            ref = self.spec.models.get(ref) or ModelSpec(name=ref)
        return self._beside_the_file(ref)

    @property
    def folder(self) -> Path | None:
        """The workflow file's folder (None for a workflow built in code or from text)."""
        return Path(self.source).parent if Path(self.source).is_file() else None

    def _beside_the_file(self, model: ModelSpec) -> ModelSpec:
        """Relative model and adapter paths in a workflow file are read from the file's folder,
        wherever the command runs (as ``schema:`` files are); names that no path there matches
        (aliases, hub ids) stay as written."""
        if self.folder is None:
            return model
        updates = {}
        for field in ("name", "adapter"):
            value = getattr(model, field)
            if field == "name" and value in self._components.model_aliases:
                continue
            if isinstance(value, str) and not Path(value).expanduser().is_absolute():
                candidate = self.folder / value
                if candidate.exists():
                    updates[field] = str(candidate.resolve())
        return model.model_copy(update=updates) if updates else model

    def models(self) -> list[ModelSpec]:
        """The model specs the nodes use, an ensemble's members in its place, each once."""
        found: dict[str, ModelSpec] = {}

        def walk(ref: ModelSpec | EnsembleSpec | str) -> None:
            if isinstance(ref, EnsembleSpec):
                for member in ref.members:
                    walk(member)
            else:
                spec = ref if isinstance(ref, ModelSpec) else ModelSpec(name=ref)
                found.setdefault(spec.key(), spec)

        for vertex in self.graph:
            walk(self.graph.nodes[vertex]["node"].model)
        return list(found.values())

    def model_names(self) -> dict[str, str]:
        """Each model the nodes use (paths resolved) and what it was read as: an alias, a path
        or a hub id, for ``ift validate``."""
        found: dict[str, str] = {}
        for spec in self.models():
            path = Path(spec.name).expanduser()
            if spec.name in self._components.model_aliases:
                found[spec.name] = "an alias"
            elif path.exists():
                found[spec.name] = "a folder" if path.is_dir() else "a file"
            else:
                found[spec.name] = "a hub id (no such path beside the workflow file or here)"
            if spec.adapter is not None:
                found[spec.adapter] = "an adapter folder"
        return found

    def _model_ref(
        self, ref: Any, backend: str | None, node: str, within: str | None = None
    ) -> ModelSpec | EnsembleSpec:
        """A node's model reference with names resolved and a backend switch applied. An
        ensemble's members are models: an ensemble named among them (nested, or a cycle) is an
        error."""
        if isinstance(ref, str) and ref in self.spec.ensembles:
            if within is not None:
                raise self.error(
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
        template = self._template(node)
        inputs, error = self.spec.inputs, self.error
        sources = node_sources(node, inputs, ids, error)
        dependencies = [ref[1] for source in sources.values() for ref in source.refs if ref[0] == "node"]
        dependencies += condition_nodes(node, node.when, "when", inputs, ids, error)
        if node.repeat is not None:
            condition_nodes(node, node.repeat.until, "repeat.until", inputs, ids, error)
        parser = self._parser(node, template)
        model = self._model(node, template)
        overrides = {
            **self.spec.generation.model_dump(exclude_none=True),
            **node.generation.model_dump(exclude_none=True),
        }
        output = parser.output(template) if parser.output is not None else None
        return BoundNode(
            node,
            template,
            parser,
            model,
            GenerationSettings(**overrides),
            tuple(dict.fromkeys(dependencies)),
            sources,
            self._constraint(node, template, model),
            mapped(output) if node.map is not None else output,
        )

    def _template(self, node: NodeSpec) -> InstructionTemplate:
        """The node's template (registered or inline), with a paraphrase and the variables the
        node's inputs give."""
        try:
            if node.template is not None:
                template = self._components.templates.get(node.template)
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
            raise self.error(str(exc), node.id, field) from None
        try:
            template.pick(node.paraphrase)  # an index the template has, checked at load
        except IftError as exc:
            raise self.error(str(exc), node.id, "paraphrase") from None
        provided, needed = set(node.inputs), set(template.variables)
        if needed - provided:
            missing = sorted(needed - provided)[0]
            raise self.error(
                f"template '{template.name}' needs input '{missing}'; add it under inputs", node.id, "inputs"
            )
        if provided - needed:
            extra = sorted(provided - needed)[0]
            raise self.error(
                f"input '{extra}' is not used by template '{template.name}' "
                f"(it uses: {', '.join(template.variables) or 'nothing'})",
                node.id,
                "inputs",
            )
        return template

    def _parser(self, node: NodeSpec, template: InstructionTemplate) -> AnswerParser:
        if node.parser is not None and template.answer is AnswerForm.LABEL:
            raise self.error(
                f"template '{template.name}' answers with one of its labels, which no parser "
                "changes; remove 'parser', or use a text template to parse free answers",
                node.id,
                "parser",
            )
        try:
            return self._components.parsers.get(node.parser or template.answer.value)
        except IftError as exc:
            raise self.error(str(exc), node.id, "parser") from None

    def _model(self, node: NodeSpec, template: InstructionTemplate) -> ModelSpec | EnsembleSpec:
        """The node's model or ensemble, checked (without loading it) against its template."""
        model_ref = node.model if node.model is not None else self.spec.model
        if model_ref is None:
            raise self.error("no model: set 'model' on the node or on the workflow", node.id, "model")
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
            raise self.error(str(exc), node.id, f"model.{exc.field}") from None
        except (ModelError, TemplateError) as exc:
            raise self.error(str(exc), node.id, "model") from None
        return model

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
            raise self.error(str(exc), node, "schema") from None
        except ValueError as exc:
            raise self.error(f"{path}: not valid JSON ({value_problem(exc)})", node, "schema") from None
        except RecursionError:
            raise self.error(f"{path}: nested too deeply to read", node, "schema") from None

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
            raise self.error(str(exc), node.id, field) from None
        if constraint is None or template.answer is AnswerForm.LABEL:
            return constraint
        if isinstance(model, EnsembleSpec):
            raise self.error(f"{what} is not supported by ensembles; give the node a model", node.id, field)
        backend = self._pool.backend_for(model)
        if not backend.structured_outputs:
            raise self.error(
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
