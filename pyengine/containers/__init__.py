"""Containers: their records, their monitor processes and the lifecycle verbs."""
