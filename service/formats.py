"""The media formats vsod reads, by name and by content, and how it names them in messages.

One owner for what the CLI, the HTTP routes, the header checks and the training loaders accept, so a
format added here is accepted, described and probed everywhere at once. No heavy imports: the CLI
builds its help from these before it loads FFmpeg or OpenCV.
"""

from __future__ import annotations

# Images: what the decoders (OpenCV) and the header checks (service.limits) read, and what a client
# hears when its bytes are none of them.
SUPPORTED_IMAGES = "JPEG, PNG, BMP or WebP"
NOT_AN_IMAGE = f"data is not a decodable image (expected {SUPPORTED_IMAGES})"
# Files read as one image, and as frames in a folder.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

# Videos: a file with one of these names is opened as a video (its container is then probed).
SUPPORTED_VIDEOS = "mp4, mov, mkv, webm, avi, mpeg-ts, mpeg-ps, wmv or animated gif"
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ts", ".gif"})
# The FFmpeg demuxers a video may be opened with, chosen by probing the content (never the name):
# those of VIDEO_SUFFIXES. Any other demuxer is refused before it reads past the probe, above all
# those that open further files or URLs named inside the input (concat, hls, dash, image2,
# image sequences, playlists, tee...), and images in a video's name (jpeg_pipe, png_pipe...).
VIDEO_DEMUXERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "mpegts", "mpeg", "asf", "gif")
