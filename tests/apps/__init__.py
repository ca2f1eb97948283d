"""Small ASGI applications that tests run under a real uvicorn server."""
