"""The benchmarks' shared result log: measurements appended as JSON lines under ``benchmarks/results/``."""

import json
import os
import time


def append_rows(path, rows):
    """Append ``rows`` (dicts) to the JSON-lines file ``path``, each stamped with the same local time.

    Appending never rewrites earlier measurements; the folder is created when missing.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(path, "a") as file:
        for row in rows:
            file.write(json.dumps(dict(row, time=stamp)) + "\n")
