"""TracingPolicy: a cluster admin's standing policy (cluster-scoped, short name tp)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, Field

from .base import Conditions, Counter, DNSLabel, LabelSelector, Model, cel, list_map
from .limits import OPEN_PREFIXES_PER_SOURCE
from .observe import ObserveSpec, Rules


class TargetSelector(Model):
    """Which containers a policy applies to. All parts are ANDed; an absent part
    matches everything."""

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Selects namespaces by their labels; absent means all."
    )
    pod_selector: LabelSelector | None = Field(
        default=None, description="Selects pods by their labels; absent means all pods."
    )
    containers: list[DNSLabel] = Field(
        default_factory=list,
        max_length=32,
        description="Container names to trace; empty means every container of the pod.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    node_selector: LabelSelector | None = Field(
        default=None, description="Selects nodes by their labels; absent means all nodes."
    )


class TracingPolicySpec(Model):
    """Which containers to trace, what to observe in them, and which rules raise Events."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.observe.syscalls.mode != 'None' || self.observe.processes.exec"
                " || self.observe.processes.exit || has(self.observe.fileOpens)"
                " || has(self.observe.connects) || (has(self.rules) && size(self.rules) > 0)",
                "the policy observes nothing: enable syscalls, processes, fileOpens or "
                "connects, or add a rule",
            ),
            (
                "(has(self.observe.fileOpens) ? size(self.observe.fileOpens.pathPrefixes) : 0)"
                " + (has(self.rules) ? self.rules.map(r, has(r.openPathPrefixes)"
                f" ? size(r.openPathPrefixes) : 0).sum() : 0) <= {OPEN_PREFIXES_PER_SOURCE}",
                f"at most {OPEN_PREFIXES_PER_SOURCE} open path prefixes per policy, "
                "observe.fileOpens.pathPrefixes and rules[].openPathPrefixes together "
                "(the size of a node's prefix table)",
                ".rules",
            ),
        )
    )

    selector: TargetSelector = Field(
        default_factory=TargetSelector, description="Which containers the policy applies to."
    )
    observe: ObserveSpec = Field(
        default_factory=ObserveSpec, description="What to observe in the selected containers."
    )
    rules: Rules


class RuleCount(Model):
    """How often one rule matched."""

    rule: DNSLabel = Field(description="The rule's name.")
    count: Counter = Field(description="Matches seen across all nodes.")


class TracingPolicyStatus(Model):
    """Observed state of a TracingPolicy, written by the operator."""

    observed_generation: Counter | None = Field(
        default=None, description="The .metadata.generation this status reflects."
    )
    conditions: Conditions
    nodes: str = Field(
        default="",
        max_length=32,
        description="Nodes whose agent applied the policy, as ready/total.",
    )
    nodes_ready: Counter = Field(default=0, description="Nodes whose agent applied the policy.")
    nodes_total: Counter = Field(default=0, description="Nodes with at least one target.")
    matched_containers: Counter = Field(
        default=0, description="Containers currently selected by the policy."
    )
    events_total: Counter = Field(default=0, description="Rule matches across all rules.")
    rule_counts: list[RuleCount] = Field(
        default_factory=list,
        max_length=32,
        description="Rule matches by rule.",
        json_schema_extra=list_map("rule"),
    )


class TracingPolicy(Model):
    """A cluster-wide tracing policy: select containers across namespaces, observe
    syscalls, processes, file opens and connects, and raise Events on rule matches."""

    KIND: ClassVar[str] = "TracingPolicy"
    PLURAL: ClassVar[str] = "tracingpolicies"
    SHORT_NAMES: ClassVar[list[str]] = ["tp"]
    NAMESPACED: ClassVar[bool] = False
    PRINTER_COLUMNS: ClassVar[list[dict[str, str]]] = [
        {"name": "Valid", "type": "string",
         "jsonPath": '.status.conditions[?(@.type=="Valid")].status'},
        {"name": "Nodes", "type": "string", "jsonPath": ".status.nodes"},
        {"name": "Containers", "type": "integer", "jsonPath": ".status.matchedContainers"},
        {"name": "Events", "type": "integer", "jsonPath": ".status.eventsTotal",
         "priority": "1"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    spec: TracingPolicySpec = Field(description="The desired tracing.")
    status: TracingPolicyStatus | None = Field(default=None, description="Observed state.")


