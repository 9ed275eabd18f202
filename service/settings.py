"""Every runtime setting in one place: one field here, one `VSOD_<FIELD>` environment variable.

`vsod serve --port 9000` builds `Settings(port=9000)`; anything not given on the command line comes
from the environment (`VSOD_REDIS_URL=redis://...`), then from the defaults below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .backends import Backend
from .paths import default_store_root  # not service.model: settings load without torch

MiB = 1024 * 1024
# Variables that once meant something: set, they are refused with their new name rather than ignored.
RENAMED = {
    "VSOD_TORCH_THREADS": "VSOD_THREADS",
    "VSOD_OPTIMIZE": "VSOD_BACKEND (auto, onnxruntime, torchscript or eager)",
}


class Settings(BaseSettings):
    # `model` and `model_store` are our field names; pydantic's own `model_*` namespace is not at risk.
    model_config = SettingsConfigDict(env_prefix="VSOD_", protected_namespaces=(), extra="ignore")

    # Server
    host: str = Field("127.0.0.1", description="Interface uvicorn binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    log_level: str = Field("info", description="uvicorn log level.")

    # Model
    model: str = Field("vsod-student", description="Name of the model in the store to serve.")
    model_store: Path = Field(default_factory=default_store_root, description="Folder holding <name>/manifest.json.")
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    threads: int | None = Field(
        None, ge=1, description="Intra-op threads for CPU inference, torch's and ONNX Runtime's (None: their defaults)."
    )
    # 8 and 5 ms on the 2-core CPU (bench/RESULTS.md): a batch of 4 costs 2.7 ms a frame against 4.5
    # alone, and lockstep sessions' next frames arrive a few ms apart (each mask is encoded and
    # each frame decoded in turn), so a short window gathers them; a lone stream never waits.
    batch_size: int = Field(8, ge=1, description="Most frames of different sessions the engine runs in one forward pass.")
    batch_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="How long a micro-batch may wait for frames of other active sessions "
        "(a lone stream never waits)."
    )
    backend: Backend = Field(
        "auto", description="How streams run the model: 'onnxruntime' (the model's exported step graph), "
        "'torchscript' (a frozen graph on CPU, float16 on CUDA), 'eager' (the float32 reference) or 'auto' "
        "(ONNX Runtime on CPU when the model has its graph, else torchscript). On CPU all within 1e-3 of eager "
        "in probability; float16 on CUDA within 1e-2."
    )
    # Off by default: on vtest.avi the masks' agreement with a lossless input (IoU at 0.5) fell from
    # 0.82 (JPEG q90, full decode) to 0.70, about what sending q75 costs (0.65): 60 frames, default model.
    scaled_jpeg_decode: bool = Field(
        False, description="Decode stream JPEGs of at least twice the model's input size at 1/2-1/8 scale "
        "(libjpeg's DCT scaling): ~0.8 ms less a 768x576 frame in the server, slightly different masks."
    )
    clip_chunk: int = Field(8, ge=1, description="Frames per forward pass when processing an uploaded clip.")

    # Session and job stores
    redis_url: str | None = Field(None, description="redis://host:port/db; None keeps sessions and jobs in this process.")
    redis_prefix: str = Field("vsod", description="Namespace of every Redis key (vsod:session:<id>, vsod:job:<id>...).")
    session_ttl_s: float = Field(600, gt=0, description="A session's temporal state expires this long after its last use.")
    job_ttl_s: float = Field(3600, gt=0, description="Clip jobs and their results expire this long after their last update.")
    job_lease_s: float = Field(30, gt=0, description="A running job whose worker stops renewing its lease this long is requeued.")
    job_max_attempts: int = Field(2, ge=1, description="Attempts before a job whose workers keep dying is failed.")
    job_workers: int = Field(1, ge=0, description="Clip-job workers in this process (0: this replica only serves the API).")
    spool_dir: Path | None = Field(None, description="Where uploads and results are staged (None: a temp folder).")

    # Limits (docs/reliability.md lists them with the error each gives)
    max_upload_bytes: int = Field(256 * MiB, gt=0, description="Largest clip upload (HTTP 413 above).")
    max_frame_bytes: int = Field(16 * MiB, gt=0, description="Largest encoded image or stream frame.")
    max_frame_side: int = Field(
        4096, gt=0, description="Largest frame width or height, read from the image or video header before decoding."
    )
    max_clip_frames: int = Field(20_000, gt=0, description="Most frames in an uploaded clip (413 at upload, or the job fails).")
    max_clip_seconds: float = Field(1200, gt=0, description="Longest uploaded clip, by its container's duration (413).")
    max_jobs_per_key: int = Field(4, ge=1, description="Most clip jobs one API key may have queued or running (429 above).")
    max_jobs: int = Field(32, ge=1, description="Most clip jobs queued or running on the service, all keys together (429).")
    max_job_bytes_per_key: int = Field(
        512 * MiB, gt=0, description="Most bytes one API key's clip jobs may hold in the job store: uploads "
        "waiting and results kept until VSOD_JOB_TTL_S (429 above; DELETE /v1/jobs/{id} frees them)."
    )
    max_job_bytes: int = Field(
        1024 * MiB, gt=0, description="Most bytes all clip jobs together may hold in the job store (429); keep it "
        "well under Redis's maxmemory, which live sessions share."
    )
    max_stream_fps: float = Field(
        60, ge=0, description="Frames a second one stream may send (bursts up to one second's worth); "
        "excess frames are dropped and counted in `dropped`. 0: no limit."
    )
    max_stream_pixels_per_s: float = Field(
        640 * 480 * 30, ge=0, description="Pixels a second of frames one stream may have decoded (640x480 at "
        "30 frames/s by default, what the page sends; the model sees 320x320 or so); a frame due over it waits "
        "until the budget allows, and newer frames replace it meanwhile (latest wins). 0: no limit."
    )

    # Access
    api_keys: SecretStr = Field(
        SecretStr(""), description="Comma-separated API keys; empty: no keys needed. Clients send X-API-Key "
        "(or ?api_key= on the WebSocket); sessions and jobs belong to the key that made them."
    )

    # Faults and shutdown
    redis_timeout_s: float = Field(
        1.0, gt=0, description="A session-store call slower than this counts as Redis being down for that frame; "
        "a job-store call slower than this fails its request with 503."
    )
    redis_retry_s: float = Field(
        1.0, gt=0, description="After a Redis failure, streams skip the store this long before trying it again."
    )
    shutdown_timeout_s: float = Field(
        10, ge=0, description="On SIGTERM, how long open streams get to finish their frames before they are closed."
    )

    @model_validator(mode="after")
    def _no_renamed_variables(self) -> Settings:
        for old, new in RENAMED.items():
            if old in os.environ:
                raise ValueError(f"{old} is no longer read: use {new}")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """FastAPI dependency: settings from the environment. `create_app(settings)` overrides it."""
    return Settings()


def describe_invalid(error: ValidationError, flags: Mapping[str, str] | None = None) -> str:
    """Every problem of invalid settings on one line, each named by its VSOD_ variable, and by the
    command-line flag it came from where `flags` (field -> flag) names one."""

    def name(loc: tuple[int | str, ...]) -> str:
        variable = f"VSOD_{'_'.join(map(str, loc)).upper()}"
        flag = (flags or {}).get(str(loc[0]))
        return f"{flag} ({variable})" if flag else variable

    return "; ".join(f"{name(e['loc'])}: {e['msg']}" if e["loc"] else
                     e["msg"].removeprefix("Value error, ") for e in error.errors())


def settings_table() -> str:
    """The settings as a markdown table (variable, default, meaning): the README's list is this output."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if name == "model_store":
            default = "`./model_store`, else the store beside the code"
        elif field.default_factory is not None or field.default is None:
            default = "none"
        elif isinstance(field.default, SecretStr):
            default = "none" if not field.default.get_secret_value() else "set"
        elif isinstance(field.default, bool):
            default = f"`{str(field.default).lower()}`"
        else:
            default = f"`{field.default}`"
        meaning = (field.description or "").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `VSOD_{name.upper()}` | {default} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
