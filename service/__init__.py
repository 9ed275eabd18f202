"""vsod runtime: the student network, the inference engine and the REST/WebSocket service.

This package never imports `distill` (the training package); `distill` builds on `service.model`.
"""

__version__ = "0.1.0"
