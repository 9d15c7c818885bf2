"""Adapters: the edge. One folder per vendor; each implements a stage's port."""
