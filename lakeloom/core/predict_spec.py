"""Where joblib models pickled before the specs merged look for ``PredictSpec``: kept for them.

A pickle names the class by module path, so this alias lets a stored scikit-learn model load;
new code imports :class:`~lakeloom.core.specs.PredictSpec` from ``lakeloom.core.specs``.
"""

from lakeloom.core.specs import PredictSpec as PredictSpec  # noqa: F401  (unpickling path)

__all__: list[str] = []
