"""The panel's sections as small widget groups (connect, queues and controls, tasks, machine), each rendering a
Snapshot; `notebook_agent.notebook.panel.Panel` lays them out and refreshes them."""
