"""Where Delta tables live: options from the environment, object-store clients, safety checks."""

from lakeloom.storage.check import (
    ConditionalWritesUnsupported as ConditionalWritesUnsupported,
)
from lakeloom.storage.check import StorageCheckError as StorageCheckError
from lakeloom.storage.check import check_conditional_writes as check_conditional_writes
from lakeloom.storage.check import ensure_safe_storage as ensure_safe_storage
