"""Workflows: the YAML format, the validated DAG and the runner."""

from .bound import BoundNode
from .graph import WorkflowGraph
from .runner import NodeResult, Runner, RunResult
from .spec import InputSpec, NodeSpec, WorkflowSpec
from .workflow import Workflow

__all__ = [
    "BoundNode",
    "InputSpec",
    "NodeResult",
    "NodeSpec",
    "Runner",
    "RunResult",
    "Workflow",
    "WorkflowGraph",
    "WorkflowSpec",
]
