"""The agent engine: worker loop, queue selection, task runner, log shipping and abort; knows no UI."""
