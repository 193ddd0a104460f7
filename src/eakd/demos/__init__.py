"""Offline demonstrations (``eakd demo``): the top layer, above the engines and the analysis."""
