"""HTTP serving of a model directory: ``deepfm serve DIR`` (FastAPI + uvicorn, the ``serve`` extra).

``deepfm.serving.app.create_app`` builds the app; ``deepfm.serving.app.serve`` runs it.
Nothing is imported here, so the CLI starts without FastAPI installed.
"""
