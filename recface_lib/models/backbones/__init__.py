"""Backbone families, one file each; names are registered in ``models/build.py``."""
