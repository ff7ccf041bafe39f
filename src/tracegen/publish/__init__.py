"""Stage 4, publishing: ``export`` (Parquet + JSONL in every format, ``features`` without ``datasets``),
``card`` (the dataset card) and ``hub`` (push to the Hugging Face Hub)."""
