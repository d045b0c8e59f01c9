"""API routers, one per resource (FastAPI's "bigger applications" layout)."""
