"""IO managers: partition-aware polars <-> Delta storage."""

from lakeloom.io_managers.delta import DeltaIOManager as DeltaIOManager
from lakeloom.io_managers.delta import MissingUpstreamError as MissingUpstreamError
from lakeloom.io_managers.delta import view_name as view_name
