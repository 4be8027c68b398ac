"""IO managers: partition-aware polars <-> Delta storage."""

from lakeloom.io_managers.io_manager import DeltaIOManager as DeltaIOManager
from lakeloom.io_managers.io_manager import MissingUpstreamError as MissingUpstreamError
from lakeloom.io_managers.io_manager import view_name as view_name
