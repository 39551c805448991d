"""The baseline strategy: Alpha158 features (:mod:`.features`), LightGBM (:mod:`.model`), training
(:mod:`.pipeline`). Modules import Qlib only when called."""
