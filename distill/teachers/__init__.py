"""Teachers for spatiotemporal knowledge distillation: heavy, slow, and only ever used in training.

- `SpatialTeacher`: a per-frame saliency network about 8x the student's FLOPs.
- `TemporalTeacher`: the same network plus a bidirectional stride-8 ConvGRU over a window of >= 3 frames.
- `load_teacher` / `build_teacher`: from `vsod-train teacher` checkpoints, frozen.
- `teacher_predict_clip`, `model_flops`, `stream_ms_per_frame`: evaluation and cost.
"""

from .blocks import TeacherOutput
from .checkpoints import KINDS, LoadedTeacher, build_teacher, freeze, load_teacher
from .inference import model_flops, stream_ms_per_frame, teacher_predict_clip
from .spatial import SpatialTeacher, SpatialTeacherConfig
from .temporal import TemporalTeacher, TemporalTeacherConfig

__all__ = [
    "KINDS",
    "LoadedTeacher",
    "SpatialTeacher",
    "SpatialTeacherConfig",
    "TeacherOutput",
    "TemporalTeacher",
    "TemporalTeacherConfig",
    "build_teacher",
    "freeze",
    "load_teacher",
    "model_flops",
    "stream_ms_per_frame",
    "teacher_predict_clip",
]
