from twisted.application.service import ServiceMaker

llamashim = ServiceMaker(
    "llamashim", "llamashim.tap", "OpenAI/Ollama front end for llama.cpp's llama-server", "llamashim"
)
