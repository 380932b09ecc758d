"""Thin Dagster resources, one per system the pipeline talks to. Each hides its protocol."""
