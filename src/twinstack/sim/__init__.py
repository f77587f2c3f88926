"""Numerics only: plain functions on numpy arrays, no networking, no service code."""
