"""The notebook face: `%load_ext notebook_agent`, the `%agent` magics, the `Agent` API and the widget panel."""
