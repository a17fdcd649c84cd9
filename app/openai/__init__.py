"""The OpenAI Images API face (`/v1`): what Open WebUI, LibreChat, SillyTavern and the openai
SDKs speak to self-hosted image backends, on the same admission, keys and caps as `/jobs`."""
