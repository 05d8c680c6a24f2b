"""The OpenAI chat-completions dialect (``/v1/chat/completions``): the fallback shapes for every unrouted path too."""
