"""The one pipeline for catalog items (tools, resources, prompts)."""
