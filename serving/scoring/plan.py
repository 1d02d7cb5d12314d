"""How a table's columns become a model's inputs, and its outputs become columns.

A ``ScoringPlan`` is built from the model's config and the input table's Arrow schema
before any row is scored: a missing, extra or mistyped column is a ``BatchError`` then.
``ScoringPlan.score`` is the one per-batch function both engines run (local threads and
Spark's ``mapInArrow``): Arrow batch -> numpy inputs of the config's dtypes -> the server's
``validate_inputs`` -> ``Runtime.predict`` -> the dataplane's output dtype cast -> Arrow batch.

Features come from one list column (``--input-column``; list, large list or fixed-size list
of numbers, one row's features in input order) or from scalar columns mapped in order
(``--columns c1,c2,…``). Rows with a null, a list of the wrong length, a value out of the
input dtype's range, or NaN/infinity when the NaN policy rejects it are *bad rows*: the
caller fails the run or writes them to a rejects file with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serving import platforms
from serving.core.validation import validate_inputs
from serving.datatypes import numpy_dtype
from serving.errors import InvalidInput
from serving.inference import Array, InferenceRequest, Tensor
from serving.modelconfig import ModelConfig, TensorSpec
from serving.observability.profile import DriftCounts
from serving.runtimes.base import Runtime, explainer
from serving.scoring.model import BatchError, VersionRef

MODEL_COLUMN = "model_name"
VERSION_COLUMN = "model_version"
ROW_COLUMN = "row"
REASON_COLUMN = "reason"
CONTRIB_PREFIX = "contrib_"

NanPolicy = Literal["auto", "allow", "reject"]

_ARROW_OUT: dict[str, pa.DataType] = {
    "BOOL": pa.bool_(),
    "UINT8": pa.uint8(),
    "UINT16": pa.uint16(),
    "UINT32": pa.uint32(),
    "UINT64": pa.uint64(),
    "INT8": pa.int8(),
    "INT16": pa.int16(),
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "FP16": pa.float16(),
    "FP32": pa.float32(),
    "FP64": pa.float64(),
}


def _accepts(datatype: str, arrow_type: pa.DataType) -> bool:
    """Whether values of ``arrow_type`` convert to ``datatype`` the way a client's numpy cast would:
    any integer or float into a float input; only integers into an integer input; bools into BOOL."""
    if datatype == "BOOL":
        return bool(pa.types.is_boolean(arrow_type))
    if datatype.startswith("FP"):
        return bool(pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type))
    return bool(pa.types.is_integer(arrow_type))


def _is_list(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


@dataclass(frozen=True)
class InputSource:
    """Where one model input comes from: a list column, or scalar columns in input order."""

    spec: TensorSpec
    list_column: str | None = None
    columns: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return self.spec.shape[1] if len(self.spec.shape) == 2 else 1

    @property
    def source_columns(self) -> tuple[str, ...]:
        return (self.list_column,) if self.list_column is not None else self.columns


@dataclass
class ScoredBatch:
    output: pa.RecordBatch
    rejects: pa.RecordBatch | None = None
    """Bad rows (pass-through columns, row number, reason) when the policy keeps them."""
    first_bad: tuple[int, str] | None = None
    """(row number, reason) of the first bad row, for the fail policy's message."""


@dataclass
class ScoringPlan:
    ref: VersionRef
    sources: list[InputSource]
    keep: list[str]
    split_outputs: bool
    reject_nan: bool
    input_schema: pa.Schema
    drift: DriftCounts | None = None
    """Counts every scored row for ``--drift-report`` (the server's binning)."""
    explain_names: list[str] | None = None
    """``--explain``: one ``contrib_<name>`` column per feature, and ``contrib_bias``."""
    explain_classes: int = 1
    """Classes of the booster's margin: 1 gives float columns, K > 1 list columns of K values."""
    output_schema: pa.Schema = field(init=False)
    rejects_schema: pa.Schema = field(init=False)

    def __post_init__(self) -> None:
        fields = [self.input_schema.field(name) for name in self.keep]
        for spec in self.ref.config.outputs:
            arrow_type = _ARROW_OUT.get(spec.datatype)
            if arrow_type is None or len(spec.shape) > 2 or (len(spec.shape) == 2 and spec.shape[1] == -1):
                raise BatchError(
                    f"output '{spec.name}' ({spec.datatype} {list(spec.shape)}) has no column form in batch "
                    "scoring (numeric outputs of shape [-1] or [-1, K] only)"
                )
            if len(spec.shape) == 1:
                fields.append(pa.field(spec.name, arrow_type))
            elif self.split_outputs:
                fields.extend(pa.field(f"{spec.name}_{k}", arrow_type) for k in range(spec.shape[1]))
            else:
                fields.append(pa.field(spec.name, pa.list_(arrow_type)))
        if self.explain_names is not None:
            kind = pa.float64() if self.explain_classes == 1 else pa.list_(pa.float64(), self.explain_classes)
            fields += [pa.field(f"{CONTRIB_PREFIX}{n}", kind) for n in [*self.explain_names, "bias"]]
        fields += [pa.field(MODEL_COLUMN, pa.string()), pa.field(VERSION_COLUMN, pa.string())]
        names = [f.name for f in fields]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise BatchError(
                f"output columns {clashes} clash with pass-through columns; choose others with --keep"
            )
        self.output_schema = pa.schema(fields)
        self.rejects_schema = pa.schema(
            [*(self.input_schema.field(name) for name in self.keep), pa.field(ROW_COLUMN, pa.int64()),
             pa.field(REASON_COLUMN, pa.string())]
        )  # fmt: skip

    @property
    def read_columns(self) -> list[str]:
        """The input columns a run reads: features and pass-through, nothing else."""
        wanted = [c for source in self.sources for c in source.source_columns] + self.keep
        return list(dict.fromkeys(wanted))

    # -- one batch ------------------------------------------------------------------------
    def _features(
        self, batch: pa.RecordBatch, bad: np.ndarray[Any, Any], reasons: list[str | None]
    ) -> list[Array]:
        """Each source's feature matrix (bad rows filled with zeros and marked in ``bad``)."""
        n = batch.num_rows
        arrays: list[Array] = []

        def mark(mask: np.ndarray[Any, Any], reason: str) -> None:
            fresh = mask & ~bad
            for i in np.flatnonzero(fresh):
                reasons[i] = reason
            bad[fresh] = True

        for source in self.sources:
            dtype = numpy_dtype(source.spec.datatype)
            name = source.spec.name
            if source.list_column is not None:
                column = batch.column(source.list_column)
                if isinstance(column, pa.ChunkedArray):
                    column = column.combine_chunks()
                lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
                null_list = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
                mark(null_list, f"column '{source.list_column}' is null")
                lengths = np.where(null_list, source.width, lengths)
                mark(
                    lengths != source.width, f"column '{source.list_column}' must hold {source.width} values"
                )
                matrix = np.zeros((n, source.width), dtype=dtype)
                good = ~bad
                if good.any():
                    rows = column.filter(pa.array(good)) if not good.all() else column
                    values = rows.flatten()
                    null_values = np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
                    flat = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)
                    matrix[good] = self._cast(flat, dtype, name).reshape(-1, source.width)
                    if null_values.any():
                        row_null = np.zeros(n, dtype=bool)
                        row_null[good] = null_values.reshape(-1, source.width).any(axis=1)
                        mark(row_null, f"column '{source.list_column}' holds a null")
            else:
                matrix = np.empty((n, source.width), dtype=dtype)
                for j, column_name in enumerate(source.columns):
                    column = batch.column(column_name)
                    nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
                    mark(nulls, f"column '{column_name}' is null")
                    values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
                    matrix[:, j] = self._cast(values, dtype, name)
            if dtype.kind == "f" and self.reject_nan:
                finite: np.ndarray[Any, Any] = np.asarray(np.isfinite(matrix).all(axis=1))
                if not finite.all():
                    mark(~finite, f"input '{name}' holds NaN or infinity")
            if source.width == 1 and len(source.spec.shape) == 1:
                matrix = matrix[:, 0]
            arrays.append(matrix)
        return arrays

    def matrices(self, batch: pa.RecordBatch) -> tuple[list[Array], Array]:
        """Each input's matrix of a batch, and the mask of bad rows (their values are zeros)."""
        bad = np.zeros(batch.num_rows, dtype=bool)
        return self._features(batch, bad, [None] * batch.num_rows), bad

    @staticmethod
    def _cast(values: Array, dtype: np.dtype[Any], name: str) -> Array:
        if values.dtype == dtype:
            return values
        if dtype.kind in "iu" and values.size:
            info = np.iinfo(dtype)
            if values.min() < info.min or values.max() > info.max:
                raise BatchError(f"input '{name}': values outside the range of {dtype} in the table")
        return values.astype(dtype)

    def score(
        self, runtime: Runtime, batch: pa.RecordBatch, first_row: int, keep_rejects: bool
    ) -> ScoredBatch:
        """Score one Arrow batch; ``first_row`` numbers its rows in the whole input."""
        n = batch.num_rows
        bad = np.zeros(n, dtype=bool)
        reasons: list[str | None] = [None] * n
        matrices = self._features(batch, bad, reasons)
        first_bad: tuple[int, str] | None = None
        rejects: pa.RecordBatch | None = None
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            first_bad = (first_row + index, reasons[index] or "")
            if keep_rejects:
                bad_rows = batch.filter(pa.array(bad))
                rejects = pa.RecordBatch.from_arrays(
                    [*(bad_rows.column(name) for name in self.keep),
                     pa.array(first_row + np.flatnonzero(bad), pa.int64()),
                     pa.array([r for r in reasons if r is not None], pa.string())],
                    schema=self.rejects_schema,
                )  # fmt: skip
            good = ~bad
            batch = batch.filter(pa.array(good))
            matrices = [np.ascontiguousarray(m[good]) for m in matrices]
        if batch.num_rows == 0:
            return ScoredBatch(_empty(self.output_schema), rejects, first_bad)
        outputs = self.predict(runtime, matrices)
        columns: list[pa.Array] = [batch.column(name) for name in self.keep]
        rows = batch.num_rows
        for spec in self.ref.config.outputs:
            array = outputs[spec.name]
            arrow_type = _ARROW_OUT[spec.datatype]
            if len(spec.shape) == 1:
                columns.append(pa.array(array, arrow_type))
            elif self.split_outputs:
                columns.extend(pa.array(array[:, k], arrow_type) for k in range(array.shape[1]))
            else:
                width = array.shape[1]
                offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
                columns.append(pa.ListArray.from_arrays(offsets, pa.array(array.reshape(-1), arrow_type)))
        if self.drift is not None:
            self.drift.add(matrices[0], outputs)
        if self.explain_names is not None:
            columns.extend(self._contributions(runtime, matrices[0]))
        columns.append(pa.array([self.ref.model] * rows, pa.string()))
        columns.append(pa.array([self.ref.version] * rows, pa.string()))
        return ScoredBatch(pa.RecordBatch.from_arrays(columns, schema=self.output_schema), rejects, first_bad)

    def _contributions(self, runtime: Runtime, x: Array) -> list[pa.Array]:
        explain = explainer(runtime)
        assert explain is not None
        e = explain(x)
        parts = [*np.moveaxis(e.contributions, -1, 0), e.bias]  # one [N] or [N, K] per column
        if self.explain_classes == 1:
            return [pa.array(np.asarray(p, dtype=np.float64), pa.float64()) for p in parts]
        kind = pa.list_(pa.float64(), self.explain_classes)
        return [
            pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(p, np.float64).ravel()), type=kind)
            for p in parts
        ]

    def with_explanations(self, runtime: Runtime, names: list[str]) -> ScoringPlan:
        """This plan with contribution columns, their shape probed on one row of zeros;
        BatchError when the version cannot explain."""
        explain = explainer(runtime)
        if explain is None or len(self.sources) != 1 or len(self.sources[0].spec.shape) != 2:
            raise BatchError(
                f"model '{self.ref.model}' version {self.ref.version} cannot explain: explanations come "
                "from XGBoost and LightGBM boosters, and from ONNX versions 'serving export' made from one"
            )
        width = self.sources[0].width
        probe = explain(np.zeros((1, width), dtype=numpy_dtype(self.sources[0].spec.datatype)))
        classes = 1 if probe.contributions.ndim == 2 else int(probe.contributions.shape[1])
        return replace(self, explain_names=names, explain_classes=classes)

    def predict(self, runtime: Runtime, matrices: Sequence[Array]) -> dict[str, Array]:
        """The server's validation, the runtime call, and the dataplane's output dtype cast."""
        config = self.ref.config
        rows = int(matrices[0].shape[0])
        request = InferenceRequest(
            self.ref.model,
            self.ref.version,
            [
                Tensor(s.spec.name, s.spec.datatype, m.shape, m)
                for s, m in zip(self.sources, matrices, strict=True)
            ],
        )
        # The same checks as online; only the per-request row cap is the table's batch size.
        checked = (
            config if rows <= config.max_batch_size else config.model_copy(update={"max_batch_size": rows})
        )
        try:
            inputs = validate_inputs(checked, request)
        except InvalidInput as exc:
            raise BatchError(exc.message) from None
        results = runtime.predict(inputs)
        outputs: dict[str, Array] = {}
        for spec in config.outputs:
            array = results[spec.name]
            dtype = numpy_dtype(spec.datatype)  # as DataPlane.infer shapes its outputs
            if array.dtype != dtype:
                array = array.astype(dtype)
            outputs[spec.name] = array
        return outputs


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def build_plan(
    ref: VersionRef,
    schema: pa.Schema,
    *,
    columns: Sequence[str] | None = None,
    input_column: str | None = None,
    keep: Sequence[str] | None = None,
    split_outputs: bool = False,
    nan: NanPolicy = "auto",
) -> ScoringPlan:
    """Map ``schema``'s columns to the model's inputs; every mismatch is a BatchError naming it.

    ``keep`` = pass-through columns (default: every column that is not a feature).
    ``nan``: ``allow`` passes NaN to the model (XGBoost reads it as a missing value, as the
    online server does), ``reject`` makes such rows bad; ``auto`` allows NaN for XGBoost
    and rejects it for ONNX graphs, which rarely define a meaning for it."""
    config: ModelConfig = ref.config
    names = schema.names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BatchError(f"the input has duplicate columns {duplicates}")
    for spec in config.inputs:
        if spec.datatype == "BYTES" or len(spec.shape) > 2 or (len(spec.shape) == 2 and spec.shape[1] == -1):
            raise BatchError(
                f"input '{spec.name}' ({spec.datatype} {list(spec.shape)}): batch scoring takes numeric "
                "inputs of shape [-1] or [-1, n]"
            )
    if columns is not None and input_column is not None:
        raise BatchError("give either --columns or --input-column, not both")
    sources: list[InputSource] = []
    if len(config.inputs) > 1:
        if columns is not None or input_column is not None:
            raise BatchError(
                f"model '{ref.model}' takes {len(config.inputs)} inputs; each comes from the column of "
                "its own name (no --columns or --input-column)"
            )
        for spec in config.inputs:
            if len(spec.shape) == 2:
                sources.append(InputSource(spec, list_column=spec.name))
            else:
                sources.append(InputSource(spec, columns=(spec.name,)))
    else:
        spec = config.inputs[0]
        width = spec.shape[1] if len(spec.shape) == 2 else 1
        if columns is not None:
            if len(columns) != width:
                raise BatchError(
                    f"input '{spec.name}' {list(spec.shape)} takes {width} features; --columns names {len(columns)}"
                )
            sources.append(InputSource(spec, columns=tuple(columns)))
        elif input_column is not None:
            sources.append(InputSource(spec, list_column=input_column))
        elif spec.name in names:
            if len(spec.shape) == 2:
                sources.append(InputSource(spec, list_column=spec.name))
            else:
                sources.append(InputSource(spec, columns=(spec.name,)))
        else:
            raise BatchError(
                f"no column '{spec.name}' in the input: name the feature columns with --columns "
                f"({width} of them, in input order) or the list column with --input-column"
            )
    for source in sources:
        spec = source.spec
        for column in source.source_columns:
            if column not in names:
                raise BatchError(f"column '{column}' is not in the input (it has {names[:20]})")
            arrow_type = schema.field(column).type
            if source.list_column is not None:
                if not _is_list(arrow_type) or len(spec.shape) != 2:
                    raise BatchError(
                        f"column '{column}' is {arrow_type}; input '{spec.name}' {list(spec.shape)} needs "
                        f"a list column of {spec.shape[-1]} numbers per row"
                    )
                if pa.types.is_fixed_size_list(arrow_type) and arrow_type.list_size != source.width:
                    raise BatchError(
                        f"column '{column}' holds {arrow_type.list_size} values per row; input "
                        f"'{spec.name}' takes {source.width}"
                    )
                arrow_type = arrow_type.value_type
            if not _accepts(spec.datatype, arrow_type):
                raise BatchError(f"column '{column}' is {arrow_type}; input '{spec.name}' is {spec.datatype}")
    features = {c for source in sources for c in source.source_columns}
    if keep is None:
        keep = [n for n in names if n not in features]
    for name in keep:
        if name not in names:
            raise BatchError(f"pass-through column '{name}' is not in the input")
    reject_nan = nan == "reject" or (nan == "auto" and not platforms.get(config.platform).nan_as_missing)
    return ScoringPlan(ref, sources, list(keep), split_outputs, reject_nan, schema)
