"""Clip upload (a job per clip), job status and results."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse

from ...formats import SUPPORTED_VIDEOS, VIDEO_SUFFIXES
from ...job_results import FORMATS
from ...job_store import JobRecord, QuotaExceeded, new_job_id
from ...limits import check_video, video_header
from ...settings import Settings
from ...video import MediaInfo, UnsupportedVideo, open_video
from ..deps import Services, caller, read_upload, services
from ..errors import problems
from ..schemas import JobCreated, JobStatus, ResultFormat

router = APIRouter(prefix="/v1", tags=["clips"])
SUFFIX_OF_TYPE = {
    "video/mp4": ".mp4", "video/x-msvideo": ".avi", "video/avi": ".avi", "video/msvideo": ".avi",
    "video/quicktime": ".mov", "video/webm": ".webm", "video/x-matroska": ".mkv", "image/gif": ".gif",
}
VIDEO_TYPES = frozenset(SUFFIX_OF_TYPE)
GENERIC_TYPES = frozenset({"application/octet-stream", ""})  # then the file name's suffix decides
RESULT_TYPES = {"zip": "application/zip", "mp4": "video/mp4", "npz": "application/octet-stream"}
JOB_ID = re.compile(r"[0-9a-f]{32}")  # matched whole (fullmatch): "$" would let a trailing newline through

CLIP_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary",
                                                   "description": SUPPORTED_VIDEOS}}},
            },
            "video/mp4": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _suffix(filename: str, content_type: str) -> str:
    suffix = Path(filename).suffix.lower()
    if content_type in VIDEO_TYPES:
        return suffix if suffix in VIDEO_SUFFIXES else SUFFIX_OF_TYPE[content_type]
    if content_type in GENERIC_TYPES and suffix in VIDEO_SUFFIXES:
        return suffix
    raise HTTPException(
        415, f"unsupported media type {content_type or '(none)'!r} for {filename or 'the upload'!r}: "
        f"upload a video ({SUPPORTED_VIDEOS})",
    )


def _probe(path: Path, limits: Settings, name: str) -> MediaInfo:
    """Check the container (allowed demuxers only, probed from the content) and its header against the
    limits, decoding nothing; then decode the first frame, so a clip that cannot be read or is too large
    is refused at once. Messages name the file as the user did (`name`), never the spool's path."""
    check_video(video_header(path, name), limits.max_frame_side, limits.max_clip_frames, limits.max_clip_seconds)
    with open_video(path, name) as source:
        return source.info


@router.post(
    "/clips", status_code=202, response_model=JobCreated, responses=problems(400, 413, 415, 429, 503),
    summary="Upload a clip; its masks are computed in the background",
    description="A video as multipart (`file` field) or a raw `video/*` body. Frames are processed in order "
    "with the temporal state carried from frame to frame. Poll `status_url`; fetch `result_url` when done. "
    "The job belongs to the API key that uploaded it. The container is probed from the content: "
    f"{SUPPORTED_VIDEOS} (415 otherwise). 429 with Retry-After when the key (or the server) "
    "already has its most jobs queued or running, or its finished jobs hold too many bytes.\n\n"
    "`curl -F file=@clip.mp4 http://127.0.0.1:8000/v1/clips`",
    openapi_extra=CLIP_BODY,
)
async def upload_clip(request: Request, svc: Services = Depends(services), owner: str = Depends(caller)) -> JSONResponse:
    upload = await read_upload(request, limit=svc.settings.max_upload_bytes, raw_types=VIDEO_TYPES,
                               spool=svc.spool, what="video")
    assert upload.path is not None
    try:
        suffix = _suffix(upload.filename, upload.content_type)
        shown = (upload.filename or f"upload{suffix}")[:200]  # the user's name for the file, never the spool path
        try:  # VideoError -> 400, LimitExceeded -> 413
            info = await asyncio.to_thread(_probe, upload.path, svc.settings, shown)
        except UnsupportedVideo as error:
            raise HTTPException(415, str(error)) from None
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(upload.filename).stem)[:100] or "upload"  # safe in headers
        record = JobRecord(new_job_id(), f"{stem}{suffix}", upload.size, frames_total=info.frame_count,
                           fps=info.fps, height=info.size[0], width=info.size[1], owner=owner)
        try:
            await svc.jobs.create(record, upload.path)
        except QuotaExceeded as error:
            raise HTTPException(429, str(error), headers={"Retry-After": str(error.retry_after_s)}) from None
    finally:
        upload.path.unlink(missing_ok=True)
    body = JobCreated(job_id=record.job_id, status=record.status, frames_total=record.frames_total,
                      status_url=f"/v1/jobs/{record.job_id}", result_url=f"/v1/jobs/{record.job_id}/result?format=zip")
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": body.status_url})


async def _job(svc: Services, job_id: str, owner: str) -> JobRecord:
    if not JOB_ID.fullmatch(job_id):  # not echoed: it may be anything, of any length
        raise HTTPException(404, "no such job: a job id is the 32 hex digits POST /v1/clips returned")
    record = await svc.jobs.get(job_id)
    if record is None or record.owner != owner:  # another key's job is as good as missing
        raise HTTPException(404, f"no job {job_id!r} (never created, deleted, or expired after {svc.settings.job_ttl_s:g} s)")
    return record


JobId = PathParam(description="the id POST /v1/clips returned", examples=["5b0f7e0c2d7d4f5e9c0f0a3a4b1e2d3c"])


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=problems(404, 503), summary="A clip job's status")
async def job_status(job_id: str = JobId, svc: Services = Depends(services), owner: str = Depends(caller)) -> JobStatus:
    record = await _job(svc, job_id, owner)
    return JobStatus(
        job_id=record.job_id, status=record.status, filename=record.filename, frames_done=record.frames_done,
        frames_total=record.frames_total, fps=record.fps, width=record.width, height=record.height,
        attempts=record.attempts, error=record.error, model_id=record.model_id, created=record.created,
        updated=record.updated, result_formats=list(FORMATS),  # type: ignore[arg-type]
    )


@router.get(
    "/jobs/{job_id}/result", response_class=Response, responses={
        200: {"description": "zip: 00000.png... (8-bit masks); mp4: H.264 mask video; npz: `masks` uint8 (T,H,W). "
              "Streamed; a failed job's masks so far when it made any (`X-Job-Status: failed`, `X-Frames`).",
              "content": {"application/zip": {}, "video/mp4": {}, "application/octet-stream": {}}},
        **problems(404, 409, 503)},
    summary="A finished job's masks",
)
async def job_result(
    job_id: str = JobId,
    format: ResultFormat = Query("zip", description="zip of PNGs, mp4 mask video, or npz array"),
    svc: Services = Depends(services),
    owner: str = Depends(caller),
) -> Response:
    record = await _job(svc, job_id, owner)
    if record.active:
        total = record.frames_total if record.frames_total is not None else "?"
        raise HTTPException(409, f"job {job_id} is {record.status} ({record.frames_done}/{total} frames); try again later")
    result = await svc.runner.result(record, format)
    if result is None and record.status == "failed":  # a failed job's masks so far are served when it made any
        raise HTTPException(409, f"job {job_id} failed: {record.error}")
    if result is None:
        raise HTTPException(404, f"the result of job {job_id} has expired")
    size, parts = result
    name = f"{Path(record.filename).stem}_masks.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(size),
               "X-Job-Status": record.status, "X-Frames": str(record.frames_done)}
    return StreamingResponse(parts, media_type=RESULT_TYPES[format], headers=headers)


@router.delete(
    "/jobs/{job_id}", status_code=204, response_class=Response, responses=problems(404, 503),
    summary="Cancel a clip job, or delete a finished one",
    description="A queued job is removed; a running one stops at its next chunk of frames. Its upload and "
    "results are freed at once, and the job is gone (404) from then on.",
)
async def delete_job(job_id: str = JobId, svc: Services = Depends(services), owner: str = Depends(caller)) -> Response:
    record = await _job(svc, job_id, owner)
    await svc.runner.delete(record)
    return Response(status_code=204)
