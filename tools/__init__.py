"""Command-line tools around the pipeline: bootstraps of the committed built-in models, the
search benchmark, the OpenAI-compatible teacher server, the tiny architectures of the presets.
The pipeline (flows/, tasks/) never imports them."""
