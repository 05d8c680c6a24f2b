"""llamashim: make OpenAI- and Ollama-speaking clients work with llama.cpp's llama-server."""

__version__ = "0.1.0"
