"""Stage 3, cleaning: filters → answer check → dedup (``postprocess.clean``), and ``merge`` of shards.

Reads what the engine wrote (``traces.jsonl``) and writes ``clean.jsonl``; imports nothing from publishing.
"""
