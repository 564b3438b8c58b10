"""The method's discovery steps, each `compute_<stage>` returning a named result that saves
and loads itself: prompts → direction → candidates → attribution (LA-IG) → features (F* and
the baselines' sets). A stage imports only earlier ones."""
