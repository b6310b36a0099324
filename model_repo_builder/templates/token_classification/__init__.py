"""Served token classification (named entities): copied into repositories."""
