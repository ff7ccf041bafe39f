"""Stage 1, planning: sources → mix → templates → tokens and prices → the plan (and its cost).

``sources`` reads FLAN v2 (files, saved datasets, the Hub presets); ``flan_options`` and ``templates`` pick
Orca's system messages; ``mix`` holds Table 3 and Algorithm 1; ``plan`` writes ``plan.jsonl`` in one pass;
``tokens``/``prices``/``params`` count, price and shape each request; ``estimate`` is the dry run;
``decontaminate`` drops evaluation overlap before anything is paid; ``shards`` splits a plan across machines.
Nothing here imports the later stages.
"""
