"""Request and response bodies (pydantic v2), one module per resource; every public name is importable from here.

- `base`: shared field types (`MetricValue`, `MetricKey`, `RunId`, `Name`, `JsonObject`, ...), `Page`,
  `IngestResult`, and the raw-body parsing of the ingest hot path;
- `runs`, `experiments`, `points` (metric points: ingest, series, comparisons), `records` (checkpoints,
  artifacts, log lines, notes).
"""

from .base import (
    INT32_MAX,
    INT64_MAX,
    METRIC_KEY_MESSAGE,
    BatchId,
    ErrorOut,
    IngestResult,
    JsonObject,
    MetricKey,
    MetricValue,
    Name,
    Page,
    RunId,
    StrictCount,
    TagKey,
    TagValue,
    Text,
    check_text,
    invalid,
    metric_key_error,
    openapi_body,
    parse_json_body,
)
from .experiments import ExperimentDetail, ExperimentOut
from .points import (
    MAX_RANK,
    MAX_STEP,
    AlignedPoint,
    ComparedSeries,
    Comparison,
    ExperimentMetrics,
    MetricBatch,
    NonFinite,
    PointIn,
    PointOut,
    RankQuery,
    SeriesOut,
    SeriesPointOut,
)
from .records import (
    ArtifactKind,
    ArtifactOut,
    CheckpointIn,
    CheckpointOut,
    ExperimentLogs,
    ExperimentModels,
    Level,
    LogBatch,
    LogLineIn,
    LogLineOut,
    NoteIn,
    NoteOut,
)
from .runs import EndpointOut, Heartbeat, ParamsIn, RunCreate, RunOut, StatusChange, TagsIn

__all__ = [
    "INT32_MAX", "INT64_MAX", "MAX_RANK", "MAX_STEP", "ErrorOut", "StrictCount", "Text", "check_text", "invalid",
    "METRIC_KEY_MESSAGE", "AlignedPoint", "ArtifactKind", "ArtifactOut", "BatchId", "CheckpointIn", "CheckpointOut",
    "ComparedSeries", "Comparison", "EndpointOut", "ExperimentDetail", "ExperimentLogs", "ExperimentMetrics",
    "ExperimentModels", "ExperimentOut", "Heartbeat", "IngestResult", "JsonObject", "Level", "LogBatch", "LogLineIn",
    "LogLineOut", "MetricBatch", "MetricKey", "MetricValue", "Name", "NonFinite", "NoteIn", "NoteOut", "Page",
    "ParamsIn", "PointIn", "PointOut", "RankQuery", "RunCreate", "RunId", "RunOut", "SeriesOut", "SeriesPointOut",
    "StatusChange", "TagKey", "TagValue", "TagsIn", "metric_key_error", "openapi_body", "parse_json_body",
]
