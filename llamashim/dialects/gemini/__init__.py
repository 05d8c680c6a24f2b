"""The Gemini API (``/v1beta/models/...``): Gemini CLI and the ``google-genai`` SDKs."""
