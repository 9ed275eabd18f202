"""The student network, its pre/post-processing (frame in, mask out) and the model store."""

from .predictor import Carried, Predictor, best_device
from .store import Manifest, ModelStore, ModelStoreError
from .student import ARCHITECTURE, STKDStudent, StudentConfig, StudentOutput, stkd_student

__all__ = [
    "ARCHITECTURE",
    "Carried",
    "Manifest",
    "ModelStore",
    "ModelStoreError",
    "Predictor",
    "STKDStudent",
    "StudentConfig",
    "StudentOutput",
    "best_device",
    "stkd_student",
]
