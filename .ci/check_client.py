"""Checks one client example's run for .ci/clients: the target got its two calls
byte-exact, and the example printed the field violations of its bad request.

Usage: python .ci/check_client.py SLUG RECORD_FILE OUTPUT_FILE   (exit 1 with one line on failure)"""

import base64
import json
import sys

slug, record_file, output_file = sys.argv[1:]
expected = {
    f"/{slug}/create": f'{{"lang":"{slug}","step":"create","note":"héllo ✓"}}'.encode(),
    f"/{slug}/trigger": f'{{"lang":"{slug}","step":"trigger"}}'.encode(),
}
got: dict[str, list[bytes]] = {path: [] for path in expected}
with open(record_file, encoding="utf-8") as f:
    for line in f:
        call = json.loads(line)
        if call["path"] in got and call["method"] == "POST":
            got[call["path"]].append(base64.b64decode(call["body"]))
problems = []
for path, body in expected.items():
    if not got[path]:
        problems.append(f"target never received POST {path}")
    elif any(b != body for b in got[path]):
        bad = next(b for b in got[path] if b != body)
        problems.append(f"POST {path} body {bad!r}, expected {body!r}")
with open(output_file, encoding="utf-8", errors="replace") as f:
    out = f.read()
violations = [line.strip() for line in out.splitlines() if line.startswith("  notify.")]
for field in ("notify.request.url:", "notify.retry.max_attempts:"):
    if not any(v.startswith(field) for v in violations):
        problems.append(f"no field violation {field[:-1]} printed")
if problems:
    print("; ".join(problems))
    sys.exit(1)
print(f"delivered byte-exact (create, trigger), read back, {len(violations)} field violations")
