"""Batch classification on a Celery worker fleet: `celery_app` (the app), `tasks` (thin tasks),
`pipeline` (the plain functions they call), `submit` (CLI and Python API), `dev` (local Redis + one worker)
and `bench` (throughput benchmark). Importing any of them does not import TensorFlow.
"""
