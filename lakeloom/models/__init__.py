"""Versioned model store under the storage root (``<root>/_lakeloom/models/<name>/v<N>/``)."""

from lakeloom.models.formats import ModelIntegrityError as ModelIntegrityError
from lakeloom.models.store import ModelNotFoundError as ModelNotFoundError
from lakeloom.models.store import ModelRef as ModelRef
from lakeloom.models.store import ModelStore as ModelStore
from lakeloom.models.store import load_model as load_model
from lakeloom.models.store import save_model as save_model
