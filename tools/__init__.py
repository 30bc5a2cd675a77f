"""Generators of product files from their one source (``make generate``); tests check that the
generated files are current."""
