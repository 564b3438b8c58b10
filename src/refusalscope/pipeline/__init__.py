"""The run: its config, the stage-by-stage orchestration with caching, the default
organism, and the output folder (``write_outputs`` / ``load_run``)."""
