"""A clip description (sprites, camera, effects) and its deterministic rendering with exact masks.

`distill.data.synthetic` samples `Scene`s; this module only draws them: each frame is the background
seen through the camera, the layers composited back to front, then lighting, blur and noise. The
ground truth is where a salient layer covers at least half a pixel and no later layer hides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class Layer:
    """A sprite (texture + alpha) and its smooth pose over time."""

    rgb: np.ndarray  # float32 n,n,3 in [0, 1]
    alpha: np.ndarray  # float32 n,n in [0, 1]
    salient: bool
    world: bool  # True: fixed in the background (moves with the camera); False: pose in frame coordinates
    start: np.ndarray  # centre at t=0, pixels
    end: np.ndarray  # centre at the last frame (before wobble)
    wobble: np.ndarray = field(default_factory=lambda: np.zeros(2))  # amplitude, pixels
    wobble_freq: float = 0.0  # radians per frame
    wobble_phase: float = 0.0
    angle: float = 0.0  # degrees at t=0
    spin: float = 0.0  # degrees per frame
    scale: float = 1.0
    growth: float = 0.0  # relative scale change per frame
    squash: float = 0.0  # anisotropic breathing amplitude (non-rigid look)
    shadow: float = 0.0  # darkening of a soft drop shadow (0: none); shadows are not salient
    shadow_offset: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def matrix(self, t: int, steps: int) -> np.ndarray:
        """2x3 affine from sprite pixels to (frame or world) pixels at frame t."""
        u = t / max(steps - 1, 1)
        wobble = self.wobble * np.sin(self.wobble_freq * t + self.wobble_phase)
        centre = self.start + (self.end - self.start) * u + wobble
        scale = self.scale * (1.0 + self.growth * t)
        breathe = self.squash * np.sin(0.35 * t + self.wobble_phase)
        theta = np.deg2rad(self.angle + self.spin * t)
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        linear = rotation @ np.diag([scale * (1 + breathe), scale * (1 - breathe)])
        half = (self.alpha.shape[1] - 1) / 2.0, (self.alpha.shape[0] - 1) / 2.0
        return np.hstack([linear, (centre - linear @ np.array(half))[:, None]])


@dataclass
class Camera:
    """World (background canvas) -> frame: pan along a line with hand shake, zoom, slow roll."""

    start: np.ndarray
    end: np.ndarray
    shake: np.ndarray
    shake_freq: float
    zoom: tuple[float, float]
    roll: tuple[float, float]  # degrees at the first and last frame

    def matrix(self, t: int, steps: int, size: tuple[int, int]) -> np.ndarray:
        u = t / max(steps - 1, 1)
        shake = self.shake * np.sin(self.shake_freq * t + np.array([0.0, 1.3]))
        centre = self.start + (self.end - self.start) * u + shake
        zoom = self.zoom[0] + (self.zoom[1] - self.zoom[0]) * u
        theta = np.deg2rad(self.roll[0] + (self.roll[1] - self.roll[0]) * u)
        linear = zoom * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        frame_centre = np.array([(size[1] - 1) / 2.0, (size[0] - 1) / 2.0])
        return np.hstack([linear, (frame_centre - linear @ centre)[:, None]])


@dataclass
class Effects:
    gain: float = 1.0
    gain_swing: float = 0.0  # lighting change over the clip
    gain_freq: float = 0.0
    tint: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    light: float = 0.0  # strength of a drifting illumination gradient
    light_angle: float = 0.0
    light_drift: float = 0.0  # radians per frame
    noise: float = 0.0  # sensor noise sigma, [0, 1] units
    noise_seed: int = 0
    blur: float = 0.0  # Gaussian sigma, pixels
    motion_blur: int = 0  # kernel length along the pan, pixels
    motion_angle: float = 0.0


@dataclass
class Scene:
    size: tuple[int, int]  # frame (height, width)
    steps: int
    background: np.ndarray  # float32 canvas, larger than the frame
    camera: Camera
    layers: list[Layer]  # drawing order, back to front
    effects: Effects
    camouflage: bool = False


# -------------------------------------------------------------------------------------- rendering


def _composite(frame: np.ndarray, mask: np.ndarray, layer: Layer, matrix: np.ndarray) -> None:
    n_h, n_w = layer.alpha.shape
    corners = matrix @ np.array([[0, n_w, 0, n_w], [0, 0, n_h, n_h], [1, 1, 1, 1]], np.float64)
    height, width = mask.shape
    x0, y0 = max(int(np.floor(corners[0].min())) - 1, 0), max(int(np.floor(corners[1].min())) - 1, 0)
    x1, y1 = min(int(np.ceil(corners[0].max())) + 2, width), min(int(np.ceil(corners[1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return  # entirely outside the frame
    local = matrix.copy()
    local[:, 2] -= (x0, y0)
    roi = (x1 - x0, y1 - y0)
    alpha = cv2.warpAffine(layer.alpha, local, roi, flags=cv2.INTER_LINEAR, borderValue=0)
    region = frame[y0:y1, x0:x1]
    if layer.shadow > 0:
        shifted = local.copy()
        shifted[:, 2] += layer.shadow_offset
        shade = cv2.warpAffine(layer.alpha, shifted, roi, flags=cv2.INTER_LINEAR, borderValue=0)
        shade = cv2.GaussianBlur(shade, (0, 0), 3.0)
        region *= (1.0 - layer.shadow * shade)[..., None]
    rgb = cv2.warpAffine(layer.rgb, local, roi, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    region += (rgb - region) * alpha[..., None]
    inside = alpha >= 0.5  # the ground truth: where the object covers at least half the pixel
    if layer.salient:
        mask[y0:y1, x0:x1] |= inside
    else:
        mask[y0:y1, x0:x1] &= ~inside


def render_frame(scene: Scene, t: int, effects: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Frame t as uint8 RGB and its exact bool ground truth."""
    height, width = scene.size
    camera = scene.camera.matrix(t, scene.steps, scene.size)
    frame = cv2.warpAffine(scene.background, camera, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    mask = np.zeros((height, width), bool)
    for layer in scene.layers:
        matrix = layer.matrix(t, scene.steps)
        if layer.world:  # compose: sprite -> world -> frame
            matrix = camera @ np.vstack([matrix, [0, 0, 1]])
        _composite(frame, mask, layer, matrix)
    if effects:
        frame = _apply_effects(scene, frame, t)
    return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8), mask


def _apply_effects(scene: Scene, frame: np.ndarray, t: int) -> np.ndarray:
    fx = scene.effects
    height, width = scene.size
    gain = fx.gain * (1.0 + fx.gain_swing * np.sin(fx.gain_freq * t))
    frame *= (gain * fx.tint).astype(np.float32)
    if fx.light > 0:
        angle = fx.light_angle + fx.light_drift * t
        y, x = np.linspace(-1, 1, height, dtype=np.float32), np.linspace(-1, 1, width, dtype=np.float32)
        field_ = 1.0 + fx.light * (np.cos(angle) * x[None, :] + np.sin(angle) * y[:, None])
        frame *= field_[..., None]
    if fx.motion_blur > 1:
        kernel = np.zeros((fx.motion_blur, fx.motion_blur), np.float32)
        c = (fx.motion_blur - 1) / 2.0
        d = np.array([np.cos(fx.motion_angle), np.sin(fx.motion_angle)]) * c
        ends = np.rint([c - d, c + d]).astype(int)
        cv2.line(kernel, tuple(map(int, ends[0])), tuple(map(int, ends[1])), 1.0, 1)
        frame = cv2.filter2D(frame, -1, kernel / kernel.sum())
    if fx.blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), fx.blur)
    if fx.noise > 0:
        rng = np.random.default_rng([fx.noise_seed, t])  # fresh grain every frame, reproducible
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(fx.noise)
    return frame
