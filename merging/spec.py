"""A merge spec: what mergekit's YAML says about a merge, minus the file paths.

Frozen and hashable, so that "has anything changed?" is `==`. Settings keep
mergekit's forms (scalar, gradient list, filtered list; see `schedule`), made
hashable: lists become tuples and `{filter, value}` dicts become `Conditional`.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from merging.methods import METHODS, PER_MODEL, REQUIRED
from merging.schedule import Conditional, Setting, anchors

Settings = tuple[tuple[str, Setting], ...]


@dataclass(frozen=True)
class MergeSpec:
    method: str
    parameters: Settings = ()  # for every tensor and model, unless a model overrides
    model_parameters: tuple[Settings, ...] = ()  # per model: Model 1, Model 2, ...
    seed: int | None = None  # for DARE and DELLA; None draws from torch's global stream

    def __post_init__(self):
        # Accept dicts and lists as written in YAML; keep one canonical, hashable form.
        object.__setattr__(self, "parameters", _settings(self.parameters, "parameters"))
        object.__setattr__(
            self,
            "model_parameters",
            tuple(_settings(p, f"model {i + 1} parameters") for i, p in enumerate(self.model_parameters)),
        )
        self._validate()

    @classmethod
    def from_dict(cls, data: Mapping) -> "MergeSpec":
        """From mergekit's YAML structure: merge_method, parameters, models (each with
        optional parameters; model paths are ignored), and harman's optional seed."""
        method = data.get("merge_method")
        if method is None:
            raise ValueError(f"merge spec: 'merge_method' is missing from {dict(data)!r}")
        models = data.get("models") or ()
        return cls(
            method=method,
            parameters=data.get("parameters") or {},
            model_parameters=tuple((entry or {}).get("parameters") or {} for entry in models),
            seed=data.get("seed"),
        )

    def to_dict(self) -> dict:
        """mergekit's YAML structure (without model paths); `seed` only if set."""
        data = {"merge_method": self.method}
        if self.parameters:
            data["parameters"] = {key: _plain(value) for key, value in self.parameters}
        if self.model_parameters:
            data["models"] = [
                {"parameters": {key: _plain(value) for key, value in settings}} for settings in self.model_parameters
            ]
        if self.seed is not None:
            data["seed"] = self.seed
        return data

    def settings_for_model(self, index: int) -> dict:
        return dict(self.model_parameters[index]) if index < len(self.model_parameters) else {}

    def _validate(self) -> None:
        method = METHODS.get(self.method)
        if method is None:
            raise ValueError(f"merge spec: unknown merge_method {self.method!r}; known: {', '.join(METHODS)}")
        if method.models is not None and len(self.model_parameters) > method.models:
            raise ValueError(
                f"merge spec: {self.method} merges {method.models} models but parameters are given for "
                f"{len(self.model_parameters)}"
            )
        for key, value in self.parameters:
            _check(self.method, method.defaults, key, value, "parameters")
        for i, settings in enumerate(self.model_parameters):
            for key, value in settings:
                if key not in PER_MODEL:
                    raise ValueError(
                        f"merge spec: model {i + 1} parameters: {key!r} is shared by all models; "
                        "set it under the global parameters"
                    )
                _check(self.method, method.defaults, key, value, f"model {i + 1} parameters")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"merge spec: seed must be an integer or None, got {self.seed!r}")
        given = {key for key, _ in self.parameters}
        for key, default in method.defaults.items():
            per_model = bool(self.model_parameters) and all(key in dict(s) for s in self.model_parameters)
            if default is REQUIRED and key not in given and not per_model:
                where = "for every model or globally" if key in PER_MODEL else "globally"
                raise ValueError(f"merge spec: {self.method} needs {key!r}; set it {where}")


def _settings(value, where: str) -> Settings:
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (tuple, list)) and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in value):
        items = value
    else:
        raise ValueError(f"merge spec: {where} must map parameter names to settings, got {value!r}")
    keys = [str(key) for key, _ in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"merge spec: {where} names a parameter twice: {keys!r}")
    return tuple(sorted((str(key), _setting(setting, f"{where}: {key}")) for key, setting in items))


def _setting(value, where: str) -> Setting:
    if isinstance(value, (Mapping, Conditional)):
        return (_conditional(value, where),)
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (Mapping, Conditional)) for v in value):
            return tuple(_conditional(v, where) for v in value)
        return tuple(_scalar(v, where) for v in value)
    return _scalar(value, where)


def _conditional(entry, where: str) -> Conditional:
    if isinstance(entry, Conditional):
        value, filter_ = entry.value, entry.filter
    elif set(entry) - {"filter", "value"} or "value" not in entry:
        raise ValueError(f"merge spec: {where}: a filtered setting has 'filter' and 'value', got {dict(entry)!r}")
    else:
        value, filter_ = entry["value"], entry.get("filter")
    if filter_ is not None and not isinstance(filter_, str):
        raise ValueError(f"merge spec: {where}: filter must be a string, got {filter_!r}")
    if isinstance(value, (list, tuple)):
        return Conditional(tuple(_scalar(v, where) for v in value), filter_)
    return Conditional(_scalar(value, where), filter_)


def _scalar(value, where: str):
    if not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"merge spec: {where}: expected a number, flag or name, got {value!r}")
    return value


def _plain(setting: Setting):
    """A setting as YAML writes it."""
    if isinstance(setting, Conditional):
        entry = {"value": _plain(setting.value)}
        if setting.filter is not None:
            entry["filter"] = setting.filter
        return entry
    if isinstance(setting, tuple):
        return [_plain(v) for v in setting]
    return setting


def _check(method_name: str, defaults: dict, key: str, setting: Setting, where: str) -> None:
    if key not in defaults:
        raise ValueError(
            f"merge spec: {where}: {method_name} has no parameter {key!r}; it takes {', '.join(defaults)}"
        )
    kind = type(defaults[key]) if defaults[key] is not REQUIRED else float
    for value in anchors(setting):
        _check_value(kind, key, value, where)


def _check_value(kind: type, key: str, value, where: str) -> None:
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"merge spec: {where}: {key} must be true or false, got {value!r}")
        return
    if kind is str:
        if key == "consensus_method" and value not in ("sum", "count"):
            raise ValueError(f"merge spec: {where}: consensus_method must be 'sum' or 'count', got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"merge spec: {where}: {key} must be a finite number, got {value!r}")
    if key == "density" and not 0 < value <= 1:
        raise ValueError(f"merge spec: {where}: density must lie in (0, 1], got {value!r}")
    if key == "gamma" and not 0 <= value < 1:
        raise ValueError(f"merge spec: {where}: gamma must lie in [0, 1), got {value!r}")
    if key == "epsilon" and value < 0:
        raise ValueError(f"merge spec: {where}: epsilon must not be negative, got {value!r}")

