"""vsod-train: synthetic data, dataset loaders, training, spatiotemporal distillation and evaluation.

Builds on `service.model` (the student and its pre/post-processing); the runtime never imports this package.
"""
