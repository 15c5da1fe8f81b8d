"""Evaluation of one or more models on one dataset: `kubetune-eval`, the EvalJob pod's command.

Importing this package (and its metrics and dataset modules) does not import torch.
"""
