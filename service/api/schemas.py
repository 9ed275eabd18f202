"""Request and response bodies of the HTTP API, with the examples /docs shows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..formats import NOT_AN_IMAGE

ResultFormat = Literal["zip", "mp4", "npz"]
JobStatusName = Literal["queued", "running", "done", "failed"]


class Problem(BaseModel):
    detail: str = Field(examples=[NOT_AN_IMAGE])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    model: str = Field(examples=["vsod-student@3f2a9c1b7d0e"])
    device: str = Field(examples=["cpu"])
    backend: str = Field(examples=["onnxruntime-cpu"], description="What runs live streams (VSOD_BACKEND as "
                         "resolved): eager, torchscript, cuda-fp16 or onnxruntime-<provider>")
    cache: Literal["redis", "memory"] = Field(examples=["redis"])


class ModelInfo(BaseModel):
    name: str = Field(examples=["vsod-student"])
    version: str = Field(examples=["1.0.0"])
    input_size: tuple[int, int] = Field(description="(height, width) the model runs at", examples=[(352, 352)])
    created: str = ""
    metrics: dict[str, object] = Field(default_factory=dict)
    loaded: bool = Field(description="True for the model this process serves")
    model_id: str | None = Field(None, description="name@sha256 prefix; set for readable entries")
    error: str | None = Field(None, description="why a broken store entry cannot be used")


class ModelList(BaseModel):
    loaded: str = Field(description="model_id of the served model", examples=["vsod-student@3f2a9c1b7d0e"])
    device: str = Field(examples=["cuda:0"])
    models: list[ModelInfo]


class JobCreated(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "5b0f7e0c2d7d4f5e9c0f0a3a4b1e2d3c", "status": "queued", "frames_total": 795,
        "status_url": "/v1/jobs/5b0f7e0c2d7d4f5e9c0f0a3a4b1e2d3c",
        "result_url": "/v1/jobs/5b0f7e0c2d7d4f5e9c0f0a3a4b1e2d3c/result?format=zip",
    }]})
    job_id: str
    status: JobStatusName
    frames_total: int | None
    status_url: str
    result_url: str


class JobStatus(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "5b0f7e0c2d7d4f5e9c0f0a3a4b1e2d3c", "status": "running", "filename": "vtest.avi",
        "frames_done": 96, "frames_total": 795, "fps": 10.0, "width": 768, "height": 576, "attempts": 1,
        "error": None, "model_id": "vsod-student@3f2a9c1b7d0e", "created": 1767225600.0, "updated": 1767225603.5,
        "result_formats": ["zip", "mp4", "npz"],
    }]})
    job_id: str
    status: JobStatusName
    filename: str
    frames_done: int
    frames_total: int | None = Field(description="from the container while running (may be approximate), exact when done")
    fps: float | None
    width: int | None
    height: int | None
    attempts: int = Field(description="times a worker started it (a job whose worker died is retried)")
    error: str | None
    model_id: str | None
    created: float = Field(description="Unix time")
    updated: float = Field(description="Unix time")
    result_formats: list[ResultFormat] = Field(description="formats /result serves once the job is done")


class SessionInfo(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "session_id": "0b5c7a52-8f0e-4a52-9a43-5a0f1d7f7e11", "frame": 120, "dropped": 3,
        "model_id": "vsod-student@3f2a9c1b7d0e", "created": 1767225600.0, "updated": 1767225612.0,
        "age_s": 12.4, "idle_s": 0.4, "expires_in_s": 599.6,
    }]})
    session_id: str
    frame: int = Field(description="index the session's next frame will get (= frames processed)")
    dropped: int = Field(description="frames dropped by backpressure (latest wins)")
    model_id: str
    created: float = Field(description="Unix time of the session's first frame")
    updated: float = Field(description="Unix time of its last frame")
    age_s: float
    idle_s: float
    expires_in_s: float | None = Field(description="seconds until the state expires unless used")
