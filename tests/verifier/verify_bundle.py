#!/usr/bin/env python3
"""An independent verifier of Contract Ledger statement bundles, written from the README's
"Proofs for auditors" and sharing no code with the ledger: what a customer's auditor would write.

    verify_bundle.py BUNDLE.json PUBLIC_KEY_HEX

Checks the checkpoint's Ed25519 signature; every event's envelope (its hash, its layout, that it
is the contract's next version) and its RFC 9162 inclusion proof in the log tree; the contract
stream's head entry and its inclusion proof in the stream-heads tree; and the statement's
arithmetic against the events: the lines are the events, each running balance is the one before
plus the line's delta, the closing balance is the last running balance, and each roll-forward
reconciles. (Recomputing the deltas themselves needs the business rules: `ledgerctl
verify-bundle` does that.)

Prints `ok: ...` and exits 0, or `FAILED: <item>: <why>` and exits 1.
Needs Python 3.9+ and the `cryptography` package (Ed25519).
"""

import base64
import datetime
import decimal
import hashlib
import json
import struct
import sys
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CHECKPOINT_FORMAT = "contract-ledger-checkpoint/1"
BUNDLE_FORMAT = "contract-ledger-bundle/1"


class Failed(Exception):
    def __init__(self, item, why):
        super().__init__(f"{item}: {why}")


def sha256(data):
    return hashlib.sha256(data).digest()


# RFC 9162 section 2.1.1: leaves and interior nodes are hashed with distinct prefixes.
def leaf_hash(entry):
    return sha256(b"\x00" + entry)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def verify_inclusion(leaf, index, size, path, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def unhex(item, text):
    try:
        value = bytes.fromhex(text)
    except (TypeError, ValueError):
        raise Failed(item, f"{text!r} is not hex")
    if len(value) != 32:
        raise Failed(item, f"{text!r} is not 32 bytes")
    return value


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        if self.at + n > len(self.data):
            raise ValueError("truncated envelope")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def str16(self):
        return self.take(self.u16()).decode("utf-8")

    def bytes32(self):
        return self.take(self.u32())


def utc(nanos):
    """Nanoseconds since the epoch as an aware datetime, to the microsecond (for comparing)."""
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        microseconds=nanos // 1000)


def decode_envelope(data):
    """The README's envelope layout, format 1 (integers big-endian)."""
    r = Reader(data)
    if r.u8() != 1:
        raise ValueError("not envelope format 1")
    event = {"position": r.u64(), "version": r.u64(), "stream": r.str16(),
             "event_id": str(uuid.UUID(bytes=r.take(16))), "type": r.str16(),
             "schema_version": r.u32(), "recorded_at": utc(r.i64())}
    flag = r.u8()
    if flag not in (0, 1):
        raise ValueError("bad effective_at flag")
    event["effective_at"] = utc(r.i64()) if flag else None
    metadata = []
    for _ in range(6):
        flag = r.u8()
        if flag not in (0, 1):
            raise ValueError("bad metadata flag")
        metadata.append(r.bytes32().decode("utf-8") if flag else None)
    (event["command_id"], event["actor"], event["correlation_id"], event["causation_id"],
     event["reason"], event["reference"]) = metadata
    event["payload"] = r.bytes32()
    event["prev_hash"] = r.take(32)
    event["hash"] = r.take(32)
    if r.at != len(data):
        raise ValueError("bytes left over after the envelope")
    return event


def signed_text(checkpoint):
    fields = ["format", "store_id", "size", "chain_hash", "log_root", "heads_root", "heads",
              "made_at", "key_id"]
    return "".join(f"{checkpoint[f]}\n" for f in fields).encode("utf-8")


def verify_checkpoint(checkpoint, public_key):
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise Failed("checkpoint", f"format {checkpoint.get('format')!r}")
    key_id = sha256(public_key)[:8].hex()
    if checkpoint["key_id"] != key_id:
        raise Failed("signature", f"signed by key {checkpoint['key_id']}, not {key_id}")
    try:
        signature = base64.b64decode(checkpoint["signature"], validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, signed_text(checkpoint))
    except (ValueError, InvalidSignature):
        raise Failed("signature", "does not match the checkpoint")


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def verify_statement(bundle, checkpoint, events):
    statement = bundle["statement"]
    D = decimal.Decimal
    if statement["contract_id"] != bundle["contract_id"]:
        raise Failed("statement", "is of another contract")
    if (statement["built_to_position"] != checkpoint["size"]
            or statement["built_to_hash"] != checkpoint["chain_hash"]):
        raise Failed("statement", "was not built to the checkpoint's head")
    by_position = {e["position"]: e for e in events}
    start = parse_time(bundle["from"]) if bundle.get("from") else None
    end = parse_time(bundle["to"]) if bundle.get("to") else None
    # The statement's lines are the contract's events effective in the period (those with no
    # effective time count at their recording time), each once.
    expected = set()
    for e in events:
        at = e["effective_at"] or e["recorded_at"]
        if (start is None or at >= start) and (end is None or at < end):
            expected.add(e["position"])
    seen = set()
    running = {k: D(v) for k, v in statement["opening"].items()}
    for number, line in enumerate(statement["lines"], 1):
        item = f"statement line {number}"
        event = by_position.get(line["position"])
        if event is None or line["position"] in seen:
            raise Failed(item, f"position {line['position']} is not one of the bundle's events")
        seen.add(line["position"])
        if line["event_id"] != event["event_id"] or line["event_type"] != event["type"]:
            raise Failed(item, "names another event than the one at its position")
        if parse_time(line["recorded_at"]) - event["recorded_at"] >= datetime.timedelta(
                microseconds=1) or event["recorded_at"] - parse_time(
                    line["recorded_at"]) >= datetime.timedelta(microseconds=1):
            raise Failed(item, "recorded_at differs from the event's")
        for bucket, delta in line["delta"].items():
            running[bucket] = running.get(bucket, D(0)) + D(delta)
        for bucket, value in line["running"].items():
            if running.get(bucket, D(0)) != D(value):
                raise Failed(item, f"running {bucket} {value} is not the sum of the deltas")
    if seen != expected:
        raise Failed("statement", "its lines are not the contract's events in the period")
    for bucket, value in statement["closing"].items():
        if running.get(bucket, D(0)) != D(value):
            raise Failed("statement", f"closing {bucket} {value} is not the last running balance")
    for roll in statement["roll_forward"] + statement["money_roll_forward"]:
        if D(roll["opening"]) + D(roll["movements"]) != D(roll["closing"]) or not roll[
                "reconciles"]:
            raise Failed("statement", f"the {roll['bucket']} roll-forward does not reconcile")
    for bucket, value in statement["closing"].items():
        rolled = [r for r in statement["roll_forward"] if r["bucket"] == bucket]
        if rolled and D(rolled[0]["closing"]) != D(value):
            raise Failed("statement", f"closing {bucket} differs from its roll-forward")


def verify(bundle, public_key):
    if bundle.get("format") != BUNDLE_FORMAT:
        raise Failed("bundle", f"format {bundle.get('format')!r}")
    checkpoint = bundle["checkpoint"]
    verify_checkpoint(checkpoint, public_key)
    size = checkpoint["size"]
    log_root = unhex("checkpoint", checkpoint["log_root"])
    heads_root = unhex("checkpoint", checkpoint["heads_root"])
    stream = "contract-" + bundle["contract_id"]
    events = []
    for index, proof in enumerate(bundle["events"]):
        item = f"event {index + 1} (position {proof['position']})"
        data = base64.b64decode(proof["envelope"], validate=True)
        if len(data) < 32 or sha256(data[:-32]) != data[-32:]:
            raise Failed(item, "its bytes do not hash to the hash they end with")
        try:
            event = decode_envelope(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise Failed(item, f"does not decode: {e}")
        if event["position"] != proof["position"]:
            raise Failed(item, f"the envelope says position {event['position']}")
        if event["stream"] != stream:
            raise Failed(item, f"belongs to {event['stream']}, not {stream}")
        if event["version"] != index + 1:
            raise Failed(item, f"is version {event['version']}, not {index + 1}")
        if not 1 <= event["position"] <= size:
            raise Failed(item, f"is not in a log of size {size}")
        path = [unhex(item, h) for h in proof["path"]]
        if not verify_inclusion(leaf_hash(event["hash"]), event["position"] - 1, size, path,
                                log_root):
            raise Failed(item, "its inclusion proof does not lead to the log root")
        events.append(event)
    if not events:
        raise Failed("bundle", "holds no event")
    head = bundle["stream_head"]
    head_hash = unhex("stream head", head["hash"])
    last = events[-1]
    if (head["stream"] != stream or head["version"] != len(events)
            or head["position"] != last["position"] or head_hash != last["hash"]):
        raise Failed("stream head", "is not the bundle's last event: events left out or added")
    entry = (struct.pack(">H", len(head["stream"].encode())) + head["stream"].encode()
             + struct.pack(">QQ", head["version"], head["position"]) + head_hash)
    path = [unhex("stream head", h) for h in head["path"]]
    if not verify_inclusion(leaf_hash(entry), head["index"], checkpoint["heads"], path,
                            heads_root):
        raise Failed("stream head", "its inclusion proof does not lead to the heads root")
    verify_statement(bundle, checkpoint, events)
    return len(events), size, checkpoint["store_id"]


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1], "rb") as f:
        bundle = json.load(f)
    try:
        public_key = bytes.fromhex(sys.argv[2])
        if len(public_key) != 32:
            raise ValueError
    except ValueError:
        print("the public key is 64 hex digits", file=sys.stderr)
        return 2
    try:
        count, size, store = verify(bundle, public_key)
    except (Failed, KeyError, TypeError) as e:
        print(f"FAILED: {e}")
        return 1
    print(f"ok: {bundle['contract_id']}, {count} events, proven in store {store} at log size "
          f"{size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
