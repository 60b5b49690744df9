"""Command-line face of notebook-agent: the embedded server today, the agent next."""
