"""The OpenAI Responses dialect (``POST /v1/responses``): request translation and the event encoder."""
