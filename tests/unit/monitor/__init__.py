"""Tests of notebook_agent.monitor."""
