"""Vigil: see README."""
