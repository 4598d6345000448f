"""NFD, as far as these tests need it: strict models of NodeFeatureRule and
nfd-worker.conf (unknown fields are errors), the Kubernetes label syntax, an evaluator
of the rule operators (../shared/facts/nfd-local-source.md; NFD
pkg/apis/nfd/nodefeaturerule/expression.go), node affinity, and the features NFD's own
sources would report for a sysfs fixture tree."""

from __future__ import annotations

import os
import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict

# --- Kubernetes label syntax -----------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def is_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not all(_DNS_LABEL.match(p) for p in prefix.split("."))):
        return False
    return bool(_NAME.match(name))


def is_label_value(v: str) -> bool:
    return v == "" or bool(_NAME.match(v))


# --- strict models -----------------------------------------------------------------

Op = Literal["In", "NotIn", "InRegexp", "Exists", "DoesNotExist", "Gt", "Lt", "Ge", "Le",
             "GtLt", "GeLe", "IsTrue", "IsFalse"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Expression(Strict):
    op: Op
    value: Optional[list[str]] = None


class Term(Strict):
    feature: str
    matchExpressions: Optional[dict[str, Expression]] = None
    matchName: Optional[Expression] = None


class AnyOf(Strict):
    matchFeatures: list[Term]


class Taint(Strict):
    key: str
    value: Optional[str] = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Rule(Strict):
    name: str
    labels: Optional[dict[str, str]] = None
    labelsTemplate: Optional[str] = None
    annotations: Optional[dict[str, str]] = None
    vars: Optional[dict[str, str]] = None
    varsTemplate: Optional[str] = None
    taints: Optional[list[Taint]] = None
    extendedResources: Optional[dict[str, str]] = None
    matchFeatures: Optional[list[Term]] = None
    matchAny: Optional[list[AnyOf]] = None


class Metadata(Strict):
    name: str
    labels: Optional[dict[str, str]] = None
    annotations: Optional[dict[str, str]] = None


class RuleSpec(Strict):
    rules: list[Rule]


class NodeFeatureRule(Strict):
    apiVersion: Literal["nfd.k8s-sigs.io/v1alpha1"]
    kind: Literal["NodeFeatureRule"]
    metadata: Metadata
    spec: RuleSpec


class Core(Strict):
    sleepInterval: Optional[str] = None
    featureSources: Optional[list[str]] = None
    labelSources: Optional[list[str]] = None
    labelWhiteList: Optional[str] = None
    noPublish: Optional[bool] = None


class DeviceSource(Strict):
    deviceClassWhitelist: Optional[list[str]] = None
    deviceLabelFields: Optional[list[Literal["class", "vendor", "device", "subsystem_vendor",
                                             "subsystem_device", "serial"]]] = None


class Sources(Strict):
    pci: Optional[DeviceSource] = None
    usb: Optional[DeviceSource] = None
    custom: Optional[list[Rule]] = None


class WorkerConfig(Strict):
    core: Optional[Core] = None
    sources: Optional[Sources] = None


def check_rule_outputs(rule: Rule) -> None:
    """Every label NFD would publish from this rule is a valid label."""
    for k, v in (rule.labels or {}).items():
        assert is_qualified_name(k), f"{rule.name}: invalid label key {k!r}"
        assert is_label_value(v), f"{rule.name}: invalid label value {k}={v!r}"
    for k, v in (rule.extendedResources or {}).items():
        assert is_qualified_name(k) and "/" in k, f"{rule.name}: invalid resource {k!r}"
        assert v.startswith("@") or re.match(r"^[0-9]+$", v), f"{rule.name}: {k}={v!r}"


# --- evaluation ---------------------------------------------------------------------

class RuleError(Exception):
    """What NFD treats as an error (not a non-match)."""


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError as e:
        raise RuleError(f"not an integer: {s!r}") from e


def expression_matches(expr: Expression, present: bool, value: str) -> bool:
    vals = expr.value or []
    op = expr.op
    if op == "DoesNotExist":
        return not present
    if not present:
        return False  # a missing key makes every other operator false, NotIn included
    if op == "Exists":
        return True
    if op == "In":
        return value in vals
    if op == "NotIn":
        return value not in vals
    if op == "InRegexp":
        return any(re.search(p, value) for p in vals)
    if op == "IsTrue":
        return value == "true"
    if op == "IsFalse":
        return value == "false"
    v = _int(value)
    if op == "Gt":
        return v > _int(vals[0])
    if op == "Lt":
        return v < _int(vals[0])
    if op == "Ge":
        return v >= _int(vals[0])
    if op == "Le":
        return v <= _int(vals[0])
    if op == "GtLt":
        return _int(vals[0]) < v < _int(vals[1])
    if op == "GeLe":
        return _int(vals[0]) <= v <= _int(vals[1])
    raise RuleError(f"unknown op {op}")


class Features:
    """attribute/flag features: name -> {key: value}; instance features: name -> [{..}]"""

    def __init__(self, attributes: dict[str, dict[str, str]], instances: dict[str, list[dict[str, str]]]):
        self.attributes = attributes
        self.instances = instances


def term_matches(term: Term, f: Features) -> bool:
    exprs = term.matchExpressions or {}
    if term.feature in f.instances:
        return any(all(expression_matches(e, k in inst, inst.get(k, "")) for k, e in exprs.items())
                   for inst in f.instances[term.feature])
    attrs = f.attributes.get(term.feature, {})
    return all(expression_matches(e, k in attrs, attrs.get(k, "")) for k, e in exprs.items())


def rule_matches(rule: Rule, f: Features) -> bool:
    if rule.matchFeatures and not all(term_matches(t, f) for t in rule.matchFeatures):
        return False
    if rule.matchAny and not any(all(term_matches(t, f) for t in a.matchFeatures) for a in rule.matchAny):
        return False
    return True


def evaluate(rules: list[Rule], f: Features) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and extended resources the rules give."""
    labels: dict[str, str] = {}
    resources: dict[str, str] = {}
    for r in rules:
        if not rule_matches(r, f):
            continue
        labels.update(r.labels or {})
        for k, v in (r.extendedResources or {}).items():
            if v.startswith("@"):
                # "@<domain>.<feature>.<key>", the key itself may hold dots and slashes
                domain, feature, key = v[1:].split(".", 2)
                attrs = f.attributes.get(f"{domain}.{feature}", {})
                if key not in attrs:
                    continue
                v = attrs[key]
            resources[k] = v
    return labels, resources


# --- node affinity ------------------------------------------------------------------

def affinity_matches(affinity: dict, labels: dict[str, str]) -> bool:
    terms = (affinity.get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {})
             .get("nodeSelectorTerms", []))
    assert terms, "no required node affinity"

    def req(r: dict) -> bool:
        key, op, vals = r["key"], r["operator"], r.get("values", [])
        present = key in labels
        v = labels.get(key)
        if op == "In":
            return present and v in vals
        if op == "NotIn":
            return not present or v not in vals
        if op == "Exists":
            return present
        if op == "DoesNotExist":
            return not present
        if op in ("Gt", "Lt"):
            try:
                n, ref = int(v), int(vals[0])
            except (TypeError, ValueError):
                return False
            return n > ref if op == "Gt" else n < ref
        raise AssertionError(f"unknown operator {op}")

    return any(all(req(r) for r in t.get("matchExpressions", [])) for t in terms)


# --- what NFD's own sources see in a fixture ------------------------------------------

def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _hex(s: Optional[str]) -> str:
    return (s or "").lower().removeprefix("0x")


def fixture_features(sys_root: str) -> dict[str, object]:
    """pci.device, usb.device and kernel.loadedmodule as NFD would report them."""
    pci = []
    base = os.path.join(sys_root, "bus/pci/devices")
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        d = os.path.join(base, name)
        pci.append({
            "vendor": _hex(_read(f"{d}/vendor")),
            "device": _hex(_read(f"{d}/device")),
            "class": _hex(_read(f"{d}/class"))[:4],
            "subsystem_vendor": _hex(_read(f"{d}/subsystem_vendor")),
            "subsystem_device": _hex(_read(f"{d}/subsystem_device")),
        })
    usb = []
    base = os.path.join(sys_root, "bus/usb/devices")
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        d = os.path.join(base, name)
        if ":" in name or _read(f"{d}/idVendor") is None:
            continue
        cls = _read(f"{d}/bDeviceClass") or "00"
        if cls == "00":  # NFD takes the first interface's class then
            first = os.path.join(d, f"{name}:1.0", "bInterfaceClass")
            cls = _read(first) or cls
        usb.append({"vendor": _read(f"{d}/idVendor"), "device": _read(f"{d}/idProduct"), "class": cls})
    modules = {m: "" for m in ("apex", "gasket") if os.path.isdir(os.path.join(sys_root, "module", m))}
    return {"pci.device": pci, "usb.device": usb, "kernel.loadedmodule": modules}


def parse_feature_file(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(local.label, local.feature) from a features.d file, as NFD's local source reads it."""
    labels, features = {}, {}
    no_label = no_feature = False
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("# +"):
            d = line[3:]
            no_label |= d == "no-label"
            no_feature |= d == "no-feature"
            continue
        if line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value if "=" in line else "true"
        if not no_label:
            labels[key] = value
        if not no_feature:
            features[key] = value
        no_label = no_feature = False
    return labels, features


def node_features(sys_root: str, feature_file: Optional[str]) -> tuple[Features, dict[str, str]]:
    """All features of a fixture node and the labels coral-nfd itself puts on it."""
    raw = fixture_features(sys_root)
    labels, local = parse_feature_file(feature_file) if feature_file is not None else ({}, {})
    f = Features(
        attributes={"kernel.loadedmodule": raw["kernel.loadedmodule"], "local.feature": local,
                    "local.label": labels},
        instances={"pci.device": raw["pci.device"], "usb.device": raw["usb.device"]},
    )
    return f, labels
