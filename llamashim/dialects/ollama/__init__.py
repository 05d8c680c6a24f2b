"""The Ollama API dialect (``/api/*``): pure mapping, the dialect's shapes, and its routes."""
