"""The schema of ``<model>/config.yaml`` and of model and version names.

Validated by pydantic when the repository is read; every error names the file and the
field (``model_repo/iris/config.yaml: inputs.0.datatype: ...``).
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serving import platforms
from serving.datatypes import DATATYPES
from serving.errors import InvalidInput, ModelLoadError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VERSION_RE = re.compile(r"^[1-9][0-9]{0,17}$")
MAX_PREDICTION_EDGES = 50
"""Most bucket edges ``prediction_buckets`` may set for one output (bounds the series count)."""


def check_model_name(name: str) -> str:
    """Model names are single path components: letters, digits, ``_ . -``; never ``..``."""
    if not NAME_RE.match(name) or ".." in name:
        raise InvalidInput(f"invalid model name '{name[:64]}': use letters, digits, '_', '.', '-'")
    return name


def check_version_name(version: str) -> str:
    """Versions are positive integers, as in Triton and the OIP model repository."""
    if not VERSION_RE.match(version):
        raise InvalidInput(f"invalid model version '{version[:64]}': versions are positive integers")
    return version


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str = Field(min_length=1, max_length=256)
    """Tensor name as clients send it (OIP ``inputs[].name``); for ONNX, the graph's name."""
    datatype: str
    """OIP datatype: BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES."""
    shape: tuple[int, ...]
    """Full shape including the batch dimension, which is -1 (any number of rows)."""

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype '{value}'; expected one of {', '.join(sorted(DATATYPES))}")
        return value

    @field_validator("shape")
    @classmethod
    def _valid_shape(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("shape needs at least the batch dimension, e.g. [-1, 4]")
        if any(d < -1 or d == 0 for d in value):
            raise ValueError("dimensions are positive, or -1 for 'any size'")
        return value


class VersionPolicy(_Strict):
    """Which version folders to serve: ``latest: N``, ``all: true`` or ``specific: [1, 3]``."""

    latest: int | None = Field(None, ge=1)
    """Serve the N highest version numbers (the default policy is ``latest: 1``)."""
    all: bool = False
    """Serve every version folder."""
    specific: tuple[int, ...] | None = None
    """Serve exactly these versions."""

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        kinds = sum([self.latest is not None, self.all, self.specific is not None])
        if kinds > 1:
            raise ValueError("set only one of latest, all, specific")
        return self

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.all:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in self.specific]
        return ordered[-(self.latest or 1) :]


class BatchingConfig(_Strict):
    """Dynamic batching for every served version of the model (see serving/batching)."""

    enabled: bool = False
    """Switch dynamic batching on for this model (off: each request is one runtime call)."""
    max_batch_size: int | None = Field(None, ge=1)
    """Rows per batch; defaults to the model's ``max_batch_size``."""
    max_queue_delay_us: int = Field(500, ge=0, le=10_000_000)
    """How long the first request of a batch waits for more. 0 = adaptive: never wait;
    a batch holds whatever queued while the previous one computed."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Row counts to dispatch at without waiting out the delay (and to cut batches at)."""
    max_queue_size: int = Field(1024, ge=1)
    """Requests waiting per version; past it the server answers 503 / RESOURCE_EXHAUSTED."""
    max_inflight_batches: int = Field(1, ge=1, le=64)
    """Batches computing at once per version (each takes one predict thread)."""

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _positive_sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(size < 1 for size in value):
            raise ValueError("preferred batch sizes are positive row counts")
        return value


HEADER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class TrafficConfig(_Strict):
    """How requests that name no version are spread over versions (see serving/router).

    Changeable at run time through ``PUT /v2/models/{m}/traffic`` (serving/admin)."""

    weights: dict[str, float] = Field(default_factory=dict)
    """version -> weight (any non-negative numbers; shares are weight / sum over the READY
    versions). Empty means 'all traffic to the latest ready version'. Versions not listed
    get no routed traffic (a request may still name them)."""
    stable_version: str | None = None
    """Which version the metrics call ``stable``; the others are ``canary``. Default: the
    oldest READY version with a positive weight (the incumbent), else the latest READY."""
    shadow_version: str | None = None
    """Also send a copy of ``shadow_fraction`` of the requests to this version, off the
    caller's path, and compare its outputs with the answer the caller got."""
    shadow_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Share of the routed requests copied to ``shadow_version`` (0 = no shadow traffic)."""
    shadow_tolerance: float = Field(1e-6, ge=0.0)
    """Largest absolute output difference that still counts as a match."""
    sticky_header: str = "x-routing-key"
    """Request header whose value pins a caller to one version (consistent hashing); the
    request parameter ``routing_key`` works too."""

    @field_validator("weights", mode="before")
    @classmethod
    def _version_keys(cls, value: object) -> object:
        # YAML reads `1: 90` with an int key; versions are strings everywhere else.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("stable_version", "shadow_version", mode="before")
    @classmethod
    def _version_str(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("weights")
    @classmethod
    def _valid_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for version, weight in value.items():
            if not VERSION_RE.match(version):
                raise ValueError(f"'{version[:64]}' is not a version (positive integer)")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight of version {version} must be a finite number >= 0")
        if value and sum(value.values()) <= 0:
            raise ValueError("at least one weight must be positive")
        return value

    @field_validator("stable_version", "shadow_version")
    @classmethod
    def _valid_version(cls, value: str | None) -> str | None:
        if value is not None and not VERSION_RE.match(value):
            raise ValueError(f"'{value[:64]}' is not a version (positive integer)")
        return value

    @field_validator("sticky_header")
    @classmethod
    def _valid_header(cls, value: str) -> str:
        value = value.lower()
        if not HEADER_RE.match(value):
            raise ValueError("a header name: lower-case letters, digits and '-'")
        return value


class WarmupConfig(_Strict):
    """Requests each version runs at load, before it is READY (first-call costs move here)."""

    enabled: bool = True
    """Run the warmup requests at load (false: the version is READY right after loading)."""
    batch_sizes: tuple[int, ...] = (1,)
    """Rows per warmup request; each size runs ``repeat`` times."""
    repeat: int = Field(1, ge=1, le=1000)
    """How many times each batch size runs."""
    inputs: dict[str, list[Any]] | None = None
    """Sample rows per input name (nested lists, batch first), tiled to each batch size.
    Without it, inputs are generated from the signature (zeros; -1 dims become 1)."""

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(size < 1 or size > 65536 for size in value):
            raise ValueError("batch sizes are row counts between 1 and 65536")
        return value


class PayloadLoggingConfig(_Strict):
    """Payload logging for the model (serving/observability/payloads.py); unset fields take
    the server's ``SERVING_PAYLOAD_LOG_*`` settings."""

    sample_rate: float | None = Field(None, ge=0.0, le=1.0)
    """Share of the model's successful requests logged (overrides the server's rate)."""
    by: Literal["request", "key"] | None = None
    """Sample by request, or by sticky routing key (a caller's requests all or none)."""
    log_inputs: bool = True
    """False: no request event, so the inputs never leave the process (sensitive features)."""
    log_outputs: bool = True
    """False: the response event carries no outputs (ids, version and timing only)."""


class ModelConfig(_Strict):
    platform: str
    """The runtime, one of the registry's platforms (serving/platforms.py): ``onnx`` (``model.onnx``),
    ``xgboost`` (``model.ubj``/``model.json``), ``lightgbm`` (``model.txt``)."""
    inputs: tuple[TensorSpec, ...] = Field(min_length=1)
    """The model's inputs, checked against the model file's signature at load."""
    outputs: tuple[TensorSpec, ...] = Field(min_length=1)
    """The model's outputs, checked against the model file's signature at load."""
    max_batch_size: int = Field(1024, ge=1)
    """Most rows one request may carry (400 above it)."""
    version_policy: VersionPolicy = VersionPolicy(latest=1)
    batching: BatchingConfig = BatchingConfig()
    traffic: TrafficConfig = TrafficConfig()
    warmup: WarmupConfig = WarmupConfig()
    payload_logging: PayloadLoggingConfig = PayloadLoggingConfig()
    fast_path: bool = True
    """Native boosters: allow the verified fast paths (XGBoost: an ONNX twin for small batches, the
    library's C entry point; LightGBM: its C single-row entry point); false = the library's public
    predict only."""
    prediction_buckets: dict[str, tuple[float, ...]] = Field(default_factory=dict)
    """Output name -> increasing bucket edges for the prediction series of a score output (one
    float column): ``serving_predictions_total`` counts each value under the first edge it does
    not exceed. Default: tenths of [0, 1], for probabilities; set it for a regressor whose
    values lie elsewhere (at most 50 edges)."""
    raw_score: bool = False
    """LightGBM: return the raw scores (before the sigmoid/softmax/exp of the objective)."""
    description: str = ""
    """Free text for the people who read the file."""

    @field_validator("platform")
    @classmethod
    def _known_platform(cls, value: str) -> str:
        platforms.get(value)  # UnknownPlatform (a ValueError) names the known ones
        return value

    @model_validator(mode="after")
    def _checks(self) -> ModelConfig:
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ValueError(f"{kind}: duplicate tensor names {names}")
            for spec in specs:
                if spec.shape[0] != -1:
                    raise ValueError(f"{kind}.{spec.name}.shape: the first dimension is the batch, -1")
        platform = platforms.get(self.platform)
        if platform.single_tensor:
            if len(self.inputs) != 1 or len(self.outputs) != 1:
                raise ValueError(f"{self.platform} models take exactly one input and give exactly one output")
            if len(self.inputs[0].shape) != 2 or self.inputs[0].shape[1] < 1:
                raise ValueError(f"{self.platform} input shape is [-1, n_features]")
        if platform.tensor_datatypes is not None:
            allowed = " or ".join(platform.tensor_datatypes)
            for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
                for spec in specs:
                    if spec.datatype not in platform.tensor_datatypes:
                        raise ValueError(
                            f"{kind}.{spec.name}.datatype: {self.platform} tensors are {allowed}"
                        )
        if self.raw_score and not platform.raw_score:
            with_raw = [p.name for p in platforms.all_platforms() if p.raw_score]
            raise ValueError(f"raw_score applies to platform {' or '.join(with_raw)} only")
        outputs = {s.name: s for s in self.outputs}
        for name, edges in self.prediction_buckets.items():
            if name not in outputs:
                raise ValueError(f"prediction_buckets.{name}: no output of that name")
            if not 1 <= len(edges) <= MAX_PREDICTION_EDGES:
                raise ValueError(f"prediction_buckets.{name}: 1 to {MAX_PREDICTION_EDGES} edges")
            if not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in itertools.pairwise(edges)):
                raise ValueError(f"prediction_buckets.{name}: finite edges in increasing order")
        return self


def load_config(path: Path) -> ModelConfig:
    """Read and validate one config.yaml; errors name the file and each bad field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        missing = "missing (every model folder needs a config.yaml)"
        raise ModelLoadError(f"{path}: {missing}", missing, path) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        # The parser's message quotes the file; unauthenticated callers get the position only.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ModelLoadError(f"{path}: not readable YAML: {exc}", f"not readable YAML{where}", path) from None
    if not isinstance(raw, dict):
        mapping = "expected a mapping at the top level"
        raise ModelLoadError(f"{path}: {mapping}", mapping, path)
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        # Field errors carry their location; whole-config checks name the field in the message.
        # A list with a bad item also reports "too short" (pydantic drops the item): skip that.
        found = exc.errors()
        errors = [
            err
            for err in found
            if not (
                err["type"] == "too_short"
                and any(
                    len(o["loc"]) > len(err["loc"]) and o["loc"][: len(err["loc"])] == err["loc"]
                    for o in found
                )
            )
        ]
        problems = "; ".join(
            ": ".join(
                part
                for part in (".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, "))
                if part
            )
            for err in errors
        )
        # Our own schema's words about fields of the file: safe for unauthenticated callers.
        raise ModelLoadError(f"{path}: {problems}", problems, path) from None
