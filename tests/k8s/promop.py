"""Strict models of the two Prometheus-operator custom resources the monitoring component
ships (the Kubernetes schemas know no CRDs), written from prometheus-operator v0.93.0's
generated CRDs (example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml
and ..._prometheusrules.yaml) for the fields used here: an unknown or misspelt field is an
error, as the API server's structural schema makes it."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The CRDs' duration pattern (interval, scrapeTimeout, for, keep_firing_for).
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Metadata(Strict):
    name: str
    namespace: Optional[str] = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Requirement(Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []


class LabelSelector(Strict):
    matchLabels: dict[str, str] = {}
    matchExpressions: list[Requirement] = []


class NamespaceSelector(Strict):
    any: bool = False
    matchNames: list[str] = []


class RelabelConfig(Strict):
    action: Literal["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                    "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                    "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                    "dropequal", "DropEqual"] = "replace"
    modulus: Optional[int] = None
    regex: Optional[str] = None
    replacement: Optional[str] = None
    separator: Optional[str] = None
    sourceLabels: list[str] = []
    targetLabel: Optional[str] = None


class PodMetricsEndpoint(Strict):
    port: Optional[str] = None
    portNumber: Optional[int] = Field(default=None, ge=1, le=65535)
    path: str = "/metrics"
    scheme: Optional[Literal["http", "https", "HTTP", "HTTPS"]] = None
    interval: Optional[str] = Field(default=None, pattern=DURATION)
    scrapeTimeout: Optional[str] = Field(default=None, pattern=DURATION)
    relabelings: list[RelabelConfig] = []
    metricRelabelings: list[RelabelConfig] = []


class PodMonitorSpec(Strict):
    selector: LabelSelector
    namespaceSelector: Optional[NamespaceSelector] = None
    jobLabel: Optional[str] = None
    podTargetLabels: list[str] = []
    podMetricsEndpoints: list[PodMetricsEndpoint] = []


class PodMonitor(Strict):
    apiVersion: Literal["monitoring.coreos.com/v1"]
    kind: Literal["PodMonitor"]
    metadata: Metadata
    spec: PodMonitorSpec


class Rule(Strict):
    alert: Optional[str] = None
    record: Optional[str] = None
    expr: str
    for_: Optional[str] = Field(default=None, alias="for", pattern=DURATION)
    keep_firing_for: Optional[str] = Field(default=None, pattern=DURATION, min_length=1)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def one_of_alert_or_record(self):
        if (self.alert is None) == (self.record is None):
            raise ValueError("a rule is an alert or a record, exactly one")
        return self


class RuleGroup(Strict):
    name: str = Field(min_length=1)
    interval: Optional[str] = Field(default=None, pattern=DURATION)
    rules: list[Rule] = []


class PrometheusRuleSpec(Strict):
    groups: list[RuleGroup] = []


class PrometheusRule(Strict):
    apiVersion: Literal["monitoring.coreos.com/v1"]
    kind: Literal["PrometheusRule"]
    metadata: Metadata
    spec: PrometheusRuleSpec


MODELS = {"PodMonitor": PodMonitor, "PrometheusRule": PrometheusRule}
