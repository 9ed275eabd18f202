"""One still image in, its saliency mask out (stateless)."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from ...formats import SUPPORTED_IMAGES
from ...limits import check_image
from ...masks import encode_mask
from ...protocol import MaskFormat
from ...video import decode_image_bytes
from ..deps import Services, read_upload, services
from ..errors import problems

router = APIRouter(prefix="/v1", tags=["images"])
IMAGE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "image/bmp", "image/webp"})
# Multipart parts may carry a generic type (curl and httpx use octet-stream for unknown suffixes).
PART_TYPES = IMAGE_TYPES | {"application/octet-stream", ""}


def check_frame_size(frame: np.ndarray, max_side: int) -> None:
    height, width = frame.shape[:2]
    if max(height, width) > max_side:
        raise HTTPException(413, f"image is {width}x{height}; the limit is {max_side} pixels a side")


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}},
            },
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/images",
    summary="Saliency mask of one image",
    description="Send the image as multipart (`file` field) or as a raw `image/jpeg` or `image/png` body. "
    "The answer is the mask at the image's size: an 8-bit grayscale PNG, or with `format=raw` the bytes "
    "row-major (`X-Mask-Width`/`X-Mask-Height` headers give the shape). No state is kept.\n\n"
    "`curl -F file=@photo.jpg http://127.0.0.1:8000/v1/images -o mask.png`",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}, "description": "The mask"},
               **problems(400, 413, 415, 503)},
    openapi_extra=IMAGE_BODY,
)
async def predict_image(
    request: Request,
    format: MaskFormat = Query("png", description="png: 8-bit grayscale PNG; raw: HxW bytes"),
    threshold: float | None = Query(None, ge=0.0, le=1.0, description="give a binary 0/255 mask at this level"),
    svc: Services = Depends(services),
) -> Response:
    upload = await read_upload(request, limit=svc.settings.max_frame_bytes, raw_types=IMAGE_TYPES, what="image")
    if upload.content_type not in PART_TYPES:
        raise HTTPException(415, f"unsupported media type {upload.content_type!r} for the image: send {SUPPORTED_IMAGES}")
    assert upload.data is not None
    check_image(upload.data, svc.settings.max_frame_side)  # from the header: 413 before decoding a bomb, 400 if no image
    frame = await asyncio.to_thread(decode_image_bytes, upload.data)  # VideoError -> 400
    check_frame_size(frame, svc.settings.max_frame_side)
    mask = await svc.engine.predict_image(frame)
    body = await asyncio.to_thread(encode_mask, mask, format, threshold)
    headers = {"X-Mask-Width": str(mask.shape[1]), "X-Mask-Height": str(mask.shape[0])}
    return Response(body, media_type="image/png" if format == "png" else "application/octet-stream", headers=headers)
