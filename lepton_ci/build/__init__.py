"""Serving images: the build context and Dockerfile (context.py), a full build with the Docker Engine
(docker_engine.py), the daemonless model-only rebuild (append.py, layer.py), and the record of the image
attached to the model version in the registry (attach.py)."""
