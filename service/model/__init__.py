"""The student network, its stream state, pre/post-processing and the model store."""

from .predictor import Predictor, best_device
from .state import StateError, StateMismatchError, StreamState
from .store import Manifest, ModelStore, ModelStoreError
from .student import ARCHITECTURE, STKDStudent, StudentConfig, StudentOutput, stkd_student

__all__ = [
    "ARCHITECTURE",
    "Manifest",
    "ModelStore",
    "ModelStoreError",
    "Predictor",
    "STKDStudent",
    "StateError",
    "StateMismatchError",
    "StreamState",
    "StudentConfig",
    "StudentOutput",
    "best_device",
    "stkd_student",
]
