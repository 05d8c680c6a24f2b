"""The Anthropic Messages API dialect (``POST /v1/messages``): request translation, events and errors."""
