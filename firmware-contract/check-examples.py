#!/usr/bin/env python3
"""Checks examples/manifest.json against the schemas and a reference classifier.

A reference, not the worker: it applies the contract's reject rules in this order
(size, UTF-8, topic, device name, JSON, shape, name match, energy, switch_state,
status) and checks that every accepted example conforms to its schema (unless the
entry says "schema_conformant": false) and that every shape/energy/switch/status
reject is also refused by the schema. Needs the jsonschema package (>= 4.18).
Usage: python3 firmware-contract/check-examples.py
"""
import json, math, os, re, sys
from jsonschema import Draft202012Validator

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
schemas = {k: Draft202012Validator(json.load(open(os.path.join(HERE, f"{k}.schema.json"))))
           for k in ("telemetry", "status", "heartbeat")}
for v in schemas.values():
    Draft202012Validator.check_schema(v.schema)
KNOWN = {"telemetry": {"power_w": "number", "boot_id": "id", "seq": "integer", "sequence_no": "integer",
                       "uptime_s": "number", "fw_version": "string", "esp32_name": "string"},
         "status": {"heap": "number", "esp32_name": "string"},
         "heartbeat": {"uptime_s": "number", "uptime": "number", "rssi": "number", "free_heap": "number",
                       "heap": "number", "boot_id": "id", "fw_version": "string", "esp32_name": "string"}}

def is_num(x): return isinstance(x, (int, float)) and not isinstance(x, bool)
def ok_type(x, t):
    return {"number": is_num(x), "integer": isinstance(x, int) and not isinstance(x, bool),
            "string": isinstance(x, str), "id": isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool))}[t]

def classify(topic, raw):
    """Returns (code, parsed instance for schema validation or None)."""
    if len(raw) > 16384: return "payload_too_large", None
    try: text = raw.decode("utf-8")
    except UnicodeDecodeError: return "invalid_utf8", None
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "autovolt" or parts[2] not in schemas: return "invalid_topic", None
    name, kind = parts[1], parts[2]
    if not NAME.fullmatch(name): return "invalid_device_name", None
    if kind == "status" and text in ("online", "offline"): return "accept", text
    try: doc = json.loads(text)  # accepts the NaN/Infinity tokens, as lenient parsers do
    except ValueError: return "invalid_json", None
    if not isinstance(doc, dict): return "wrong_shape", doc
    for k, t in KNOWN[kind].items():
        if k in doc and not ok_type(doc[k], t): return "wrong_shape", doc
    if "esp32_name" in doc and doc["esp32_name"] != name: return "device_name_mismatch", doc
    if kind == "telemetry":
        if "energy_wh_total" not in doc: return "missing_energy", doc
        e = doc["energy_wh_total"]
        if not is_num(e) or math.isnan(e) or math.isinf(e) or e < 0: return "invalid_energy", doc
        s = doc.get("switch_state")
        if isinstance(s, list): good = len(s) <= 32 and all(v in (0, 1) for v in s)  # True == 1 in Python
        elif isinstance(s, dict): good = len(s) <= 32 and all(v in (0, 1) for v in s.values()) \
            and all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", k) for k in s)
        else: good = False
        if not good: return "invalid_switch_state", doc
    if kind == "status" and doc.get("status") not in ("online", "offline"): return "invalid_status", doc
    return "accept", doc

failures = 0
manifest = json.load(open(os.path.join(HERE, "examples", "manifest.json")))
codes = set()
for e in manifest:
    raw = open(os.path.join(HERE, "examples", e["file"]), "rb").read()
    code, inst = classify(e["topic"], raw)
    codes.add(e["expect"])
    kind = e["topic"].split("/")[-1]
    problems = []
    if code != e["expect"]: problems.append(f"reference classifier says {code}")
    has_nonfinite = any(isinstance(v, float) and not math.isfinite(v) for v in (inst.values() if isinstance(inst, dict) else []))
    if inst is not None and kind in schemas and not has_nonfinite:
        valid = schemas[kind].is_valid(inst)
        if e["expect"] == "accept" and valid != e.get("schema_conformant", True):
            problems.append(f"schema valid={valid}")
        if e["expect"] in ("wrong_shape", "missing_energy", "invalid_energy", "invalid_switch_state", "invalid_status") and valid:
            problems.append("schema accepts it")
    print(("FAIL " if problems else "ok   ") + f"{e['expect']:22} {e['file']} @ {e['topic'][:48]} {'; '.join(problems)}")
    failures += bool(problems)
missing = {"payload_too_large", "invalid_utf8", "invalid_json", "wrong_shape", "invalid_topic", "invalid_device_name",
           "device_name_mismatch", "missing_energy", "invalid_energy", "invalid_switch_state", "invalid_status"} - codes
if missing: print("reject codes without an example:", sorted(missing)); failures += 1
print(f"{len(manifest)} examples, {failures} failures")
sys.exit(1 if failures else 0)
