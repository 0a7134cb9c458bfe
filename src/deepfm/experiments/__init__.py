"""Experiments: the DeepFM paper's model comparison and hyper-parameter studies, with reports."""
