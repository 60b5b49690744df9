"""Machine and GPU stats for the Workers page and the notebook panel."""

from notebook_agent.monitor.machine import MachineMonitor
from notebook_agent.monitor.nvml import GpuMonitor, GpuReading

__all__ = ["GpuMonitor", "GpuReading", "MachineMonitor"]
