#!/usr/bin/env python3
"""Validate recorded HubSpot API requests against the official client's models.

Input: a JSONL file (path argument, or stdin when the argument is missing or
"-"), one recorded request per line:

    {"method": "POST", "path": "/crm/v3/objects/contacts/search", "body": {...}}

Keys starting with "_" are comments and are ignored ("_expect" is used by
--check-expect, see below). Blank lines are skipped.

Each (method, path) maps to a request model of PyPI `hubspot-api-client`
(pinned in setup.sh), built with `client_side_validation = True`, which checks
required fields and enums. On top of that this script checks what the
generated models cannot (see README.md): strict JSON types (the models coerce
5 to "5" silently), unknown fields, string->string property maps, batch sizes,
search limits, communication properties, association type ids, id formats.

Output: one line per request, `OK   line N: METHOD PATH` or
`FAIL line N: METHOD PATH: <reasons>`, then
`validated N requests: K ok, M failed`. Exit 0 only if every request passed
(1 if any failed, 2 on usage errors or unreadable input).

--check-expect: for self-tests of the validator. A line with "_expect": "text"
must FAIL with a reason containing that text; a line without it must pass.
Exit 0 only if every line met its expectation.
"""

import argparse
import datetime as dt
import json
import re
import sys
import types

try:
    import hubspot.crm.contacts as hs_contacts
    import hubspot.crm.contacts.models as contacts_models
    import hubspot.crm.objects.communications as hs_comms
    import hubspot.crm.objects.communications.models as comms_models
    from importlib.metadata import version as _pkg_version
except ImportError as e:  # pragma: no cover
    sys.stderr.write(
        "validate.py needs hubspot-api-client: run tools/hubspot_validate/setup.sh DIR "
        "and use the python it prints (%s)\n" % e
    )
    sys.exit(2)

CLIENT_VERSION = _pkg_version("hubspot-api-client")

# --- HubSpot facts the generated models do not encode ----------------------
BATCH_MAX = 100  # every /batch/* endpoint: 1..100 inputs
SEARCH_LIMIT_MAX = 200  # search page size
SEARCH_MAX_GROUPS = 5  # limits since 2024-08-26 (HubSpot developer changelog,
SEARCH_MAX_FILTERS_PER_GROUP = 10  # "Expanded Filtering Capabilities ... in
SEARCH_MAX_FILTERS_TOTAL = 25  # HubSpot's Search API")
COMM_CHANNEL_TYPES = {"WHATS_APP", "SMS", "LINKEDIN_MESSAGE"}
COMM_BODY_MAX = 65536
# HUBSPOT_DEFINED association type ids FROM a communication (HubSpot's
# association type table): to contact 81, ticket 83, deal 85, company 87.
COMM_ASSOC_TYPE_IDS = {81: "contact", 83: "ticket", 85: "deal", 87: "company"}
# idProperty must name a *unique* property; HubSpot answers 400 "Unable to
# perform update/upsert by non-unique ... property" for these.
NON_UNIQUE_ID_PROPERTIES = {"phone", "mobilephone", "hs_whatsapp_phone_number", "hs_object_id"}
OPS_ONE_VALUE = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}
OPS_VALUES = {"IN", "NOT_IN"}
OPS_NO_VALUE = {"HAS_PROPERTY", "NOT_HAS_PROPERTY"}

CONTACTS = "contacts"
COMMS = "communications"
PACKAGES = {
    CONTACTS: (hs_contacts, contacts_models),
    COMMS: (hs_comms, comms_models),
}

# (method, path regex, object package, model class, kind)
ROUTES = [
    ("POST", r"/crm/v3/objects/contacts/search", CONTACTS, "PublicObjectSearchRequest", "search"),
    ("POST", r"/crm/v3/objects/contacts/batch/read", CONTACTS, "BatchReadInputSimplePublicObjectId", "batch_read"),
    ("POST", r"/crm/v3/objects/contacts/batch/create", CONTACTS,
     "BatchInputSimplePublicObjectBatchInputForCreate", "batch_create"),
    ("POST", r"/crm/v3/objects/contacts/batch/upsert", CONTACTS,
     "BatchInputSimplePublicObjectBatchInputUpsert", "batch_upsert"),
    ("POST", r"/crm/v3/objects/contacts/batch/update", CONTACTS, "BatchInputSimplePublicObjectBatchInput", "batch_update"),
    ("POST", r"/crm/v3/objects/communications/batch/create", COMMS,
     "BatchInputSimplePublicObjectBatchInputForCreate", "comm_create"),
    ("POST", r"/crm/v3/objects/communications/batch/update", COMMS,
     "BatchInputSimplePublicObjectBatchInput", "comm_update"),
    # Recovery of a create whose answer was lost: find the session key in the bodies.
    ("POST", r"/crm/v3/objects/communications/search", COMMS, "PublicObjectSearchRequest", "search"),
    ("PUT", r"/crm/v4/objects/communications/([^/]+)/associations/default/contacts/([^/]+)", None, None,
     "assoc_default"),
]


_SHARED = {}


def _configs_and_clients():
    """One Configuration (client_side_validation on) and ApiClient per package."""
    if not _SHARED:
        for name, (pkg, _models) in PACKAGES.items():
            cfg = pkg.Configuration()
            cfg.client_side_validation = True  # off by default: nothing is checked without it
            _SHARED[name] = (cfg, pkg.ApiClient(configuration=cfg))
    return _SHARED


class Checker:
    def __init__(self):
        self.errors = []
        shared = _configs_and_clients()
        self.configs = {name: cc[0] for name, cc in shared.items()}
        self.clients = {name: cc[1] for name, cc in shared.items()}

    def err(self, path, msg):
        self.errors.append("%s: %s" % (path or "body", msg))

    # --- strict, model-driven walk ------------------------------------------
    def build(self, data, typ, path, obj):
        """Check `data` against the generated type string `typ` strictly and
        return the value for the model constructor (a model instance for a
        model type). Records errors; a value of the wrong JSON type is passed
        on unchanged, so the model does not also report it as missing."""
        if data is None:
            return None
        m = re.match(r"list\[(.*)\]$", typ)
        if m:
            if not isinstance(data, list):
                self.err(path, "expected an array, got %s" % jtype(data))
                return data
            return [self.build(v, m.group(1), "%s[%d]" % (path, i), obj) for i, v in enumerate(data)]
        m = re.match(r"dict\(([^,]*), (.*)\)$", typ) or re.match(r"dict\[([^,]*), (.*)\]$", typ)
        if m:
            if not isinstance(data, dict):
                self.err(path, "expected an object, got %s" % jtype(data))
                return data
            return {k: self.build(v, m.group(2), "%s.%s" % (path, k), obj) for k, v in data.items()}
        if typ == "str":
            if not isinstance(data, str):
                self.err(path, "expected a string, got %s %s" % (jtype(data), short(data)))
            return data
        if typ in ("int", "long"):
            if isinstance(data, bool) or not isinstance(data, int):
                self.err(path, "expected an integer, got %s %s" % (jtype(data), short(data)))
            return data
        if typ == "float":
            if isinstance(data, bool) or not isinstance(data, (int, float)):
                self.err(path, "expected a number, got %s" % jtype(data))
            return data
        if typ == "bool":
            if not isinstance(data, bool):
                self.err(path, "expected a boolean, got %s" % jtype(data))
            return data
        if typ == "object":
            return data
        klass = getattr(PACKAGES[obj][1], typ)
        if not isinstance(data, dict):
            self.err(path, "expected a %s object, got %s" % (typ, jtype(data)))
            return data
        by_json = {j: a for a, j in klass.attribute_map.items()}
        for key in data:
            if key not in by_json:
                self.err(
                    join(path, key),
                    "unknown field for %s (known: %s)" % (typ, ", ".join(sorted(by_json))),
                )
        kwargs = {}
        for attr, sub in klass.openapi_types.items():
            j = klass.attribute_map[attr]
            if j in data:
                kwargs[attr] = self.build(data[j], sub, join(path, j), obj)
        try:
            return klass(local_vars_configuration=self.configs[obj], **kwargs)
        except (ValueError, TypeError) as e:
            self.err(path, "%s: %s" % (typ, e))
            return None

    def official_deserialize(self, body, model, obj):
        """The same body through the client's own ApiClient.deserialize (the
        path the SDK uses), as a cross-check of the walk above."""
        resp = types.SimpleNamespace(data=json.dumps(body))
        try:
            self.clients[obj].deserialize(resp, model)
        except Exception as e:  # noqa: BLE001 - any refusal is a finding
            self.err("body", "ApiClient.deserialize(%s): %s: %s" % (model, type(e).__name__, e))

    # --- semantic checks ------------------------------------------------------
    def check_inputs_len(self, body):
        inputs = body.get("inputs")
        if isinstance(inputs, list) and not 1 <= len(inputs) <= BATCH_MAX:
            self.err("inputs", "batch size %d outside 1..%d" % (len(inputs), BATCH_MAX))

    def check_props_map(self, props, path):
        if not isinstance(props, dict):
            return
        for k, v in props.items():
            if not k.strip():
                self.err(path, "empty property name")
            if v is None:
                self.err("%s.%s" % (path, k), "null; HubSpot property values are strings (\"\" clears a value)")

    def check_ids(self, body, need_id_property, kind):
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            return
        seen = {}
        batch_id_prop = body.get("idProperty") if kind == "batch_read" else None
        for i, item in enumerate(inputs):
            if not isinstance(item, dict):
                continue
            p = "inputs[%d]" % i
            idp = item.get("idProperty", batch_id_prop) if kind != "batch_read" else batch_id_prop
            if need_id_property and not idp:
                self.err(p, "upsert input needs idProperty (a unique property such as email)")
            if isinstance(idp, str) and idp in NON_UNIQUE_ID_PROPERTIES:
                self.err(
                    p + ".idProperty" if kind != "batch_read" else "idProperty",
                    "%r is not a unique property; HubSpot refuses update/upsert/read by it "
                    "(use email or a custom unique property, or the record id without idProperty)" % idp,
                )
            ident = item.get("id")
            if isinstance(ident, str):
                if not ident.strip():
                    self.err(p + ".id", "empty id")
                elif not idp and not ident.isdigit():
                    self.err(p + ".id", "without idProperty the id is a HubSpot record id (digits), got %r" % ident)
                key = (idp, ident.lower() if idp == "email" else ident)
                if key in seen:
                    self.err(p + ".id", "duplicate id %r in one batch (also inputs[%d])" % (ident, seen[key]))
                else:
                    seen[key] = i

    def check_search(self, body):
        limit = body.get("limit")
        if isinstance(limit, int) and not isinstance(limit, bool) and not 1 <= limit <= SEARCH_LIMIT_MAX:
            self.err("limit", "%d outside 1..%d" % (limit, SEARCH_LIMIT_MAX))
        after = body.get("after")
        if isinstance(after, str) and not after.strip():
            self.err("after", "empty paging cursor")
        groups = body.get("filterGroups")
        if not isinstance(groups, list):
            return
        if len(groups) > SEARCH_MAX_GROUPS:
            self.err("filterGroups", "%d groups, HubSpot allows %d" % (len(groups), SEARCH_MAX_GROUPS))
        total = 0
        for g, group in enumerate(groups):
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list):
                continue
            gp = "filterGroups[%d].filters" % g
            if not filters:
                self.err(gp, "empty filter group")
            if len(filters) > SEARCH_MAX_FILTERS_PER_GROUP:
                self.err(gp, "%d filters, HubSpot allows %d per group" % (len(filters), SEARCH_MAX_FILTERS_PER_GROUP))
            total += len(filters)
            for f, flt in enumerate(filters):
                if not isinstance(flt, dict):
                    continue
                fp = "%s[%d]" % (gp, f)
                op = flt.get("operator")
                has_value = flt.get("value") is not None
                values = flt.get("values")
                if isinstance(flt.get("propertyName"), str) and not flt["propertyName"].strip():
                    self.err(fp + ".propertyName", "empty")
                if op in OPS_ONE_VALUE and not has_value:
                    self.err(fp, "operator %s needs `value`" % op)
                if op == "BETWEEN" and not (has_value and flt.get("highValue") is not None):
                    self.err(fp, "operator BETWEEN needs `value` and `highValue`")
                if op in OPS_VALUES and not (isinstance(values, list) and values):
                    self.err(fp, "operator %s needs a non-empty `values` array" % op)
                if op in OPS_NO_VALUE and (has_value or values):
                    self.err(fp, "operator %s takes no value" % op)
                if op not in OPS_VALUES and values is not None and op not in OPS_NO_VALUE:
                    self.err(fp, "`values` is only used with IN / NOT_IN (operator %s)" % op)
        if total > SEARCH_MAX_FILTERS_TOTAL:
            self.err("filterGroups", "%d filters in total, HubSpot allows %d" % (total, SEARCH_MAX_FILTERS_TOTAL))

    def check_comm_properties(self, props, path, create):
        if not isinstance(props, dict):
            return

        def need(name):
            if name not in props:
                if create:
                    self.err(path, "missing %s" % name)
                return False
            return isinstance(props[name], str)

        if need("hs_communication_channel_type") and props["hs_communication_channel_type"] not in COMM_CHANNEL_TYPES:
            self.err(
                path + ".hs_communication_channel_type",
                "%r not one of %s" % (props["hs_communication_channel_type"], ", ".join(sorted(COMM_CHANNEL_TYPES))),
            )
        if need("hs_communication_logged_from") and props["hs_communication_logged_from"] != "CRM":
            self.err(path + ".hs_communication_logged_from", "must be \"CRM\", got %r" % props["hs_communication_logged_from"])
        if need("hs_timestamp"):
            why = timestamp_problem(props["hs_timestamp"])
            if why:
                self.err(path + ".hs_timestamp", why)
        if need("hs_communication_body"):
            body = props["hs_communication_body"]
            if len(body) > COMM_BODY_MAX:
                self.err(path + ".hs_communication_body", "%d chars, at most %d" % (len(body), COMM_BODY_MAX))
            if create and not body.strip():
                self.err(path + ".hs_communication_body", "empty")

    def check_associations(self, item, path):
        assocs = item.get("associations")
        if not isinstance(assocs, list):
            return
        for a, assoc in enumerate(assocs):
            if not isinstance(assoc, dict):
                continue
            ap = "%s.associations[%d]" % (path, a)
            to = assoc.get("to")
            if isinstance(to, dict) and isinstance(to.get("id"), str) and not to["id"].isdigit():
                self.err(ap + ".to.id", "a HubSpot record id is digits, got %r" % to["id"])
            tys = assoc.get("types")
            if isinstance(tys, list):
                if not tys:
                    self.err(ap + ".types", "empty")
                for t, ty in enumerate(tys):
                    if not isinstance(ty, dict):
                        continue
                    tp = "%s.types[%d]" % (ap, t)
                    tid = ty.get("associationTypeId")
                    if isinstance(tid, int) and not isinstance(tid, bool):
                        if tid <= 0:
                            self.err(tp + ".associationTypeId", "must be positive, got %d" % tid)
                        elif ty.get("associationCategory") == "HUBSPOT_DEFINED" and tid not in COMM_ASSOC_TYPE_IDS:
                            self.err(
                                tp + ".associationTypeId",
                                "%d is not a HUBSPOT_DEFINED communication->object type (%s)"
                                % (tid, ", ".join("%d=%s" % kv for kv in sorted(COMM_ASSOC_TYPE_IDS.items()))),
                            )

    def semantic(self, kind, body):
        if kind == "search":
            self.check_search(body)
            return
        self.check_inputs_len(body)
        inputs = body.get("inputs") if isinstance(body.get("inputs"), list) else []
        if kind == "batch_read":
            self.check_ids(body, False, kind)
            return
        if kind in ("batch_update", "batch_upsert", "comm_update"):
            self.check_ids(body, kind == "batch_upsert", kind)
        for i, item in enumerate(inputs):
            if not isinstance(item, dict):
                continue
            p = "inputs[%d]" % i
            props = item.get("properties")
            self.check_props_map(props, p + ".properties")
            if kind in ("comm_create", "comm_update"):
                self.check_comm_properties(props, p + ".properties", kind == "comm_create")
                self.check_associations(item, p)
            if kind in ("batch_update", "comm_update") and isinstance(props, dict) and not props:
                self.err(p + ".properties", "empty update")


def jtype(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def short(v):
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def join(path, key):
    return key if path in ("", "body") else "%s.%s" % (path, key)


ISO_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"
)


def timestamp_problem(v):
    """None when `v` is epoch milliseconds (digits) or an ISO 8601 date-time
    with a UTC offset; otherwise why not."""
    if v.isdigit():
        n = int(v)
        if n < 10**12:
            return "%r looks like epoch seconds; HubSpot wants epoch milliseconds" % v
        if n >= 10**14:
            return "%r is not a plausible epoch-milliseconds value" % v
        return None
    if not ISO_RE.match(v):
        return "%r is neither epoch milliseconds nor an ISO 8601 date-time with Z/offset" % v
    try:
        iso = v.replace("Z", "+00:00")
        # fromisoformat before 3.11 wants at most 6 fractional digits
        iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)
        dt.datetime.fromisoformat(iso)
    except ValueError as e:
        return "%r: %s" % (v, e)
    return None


def route(method, path):
    for m, rx, obj, model, kind in ROUTES:
        match = re.fullmatch(rx, path)
        if m == method and match:
            return obj, model, kind, match.groups()
    return None


def validate_request(req):
    """Return a list of problems (empty = OK)."""
    if not isinstance(req, dict):
        return ["a line must be a JSON object, got %s" % jtype(req)]
    extra = [k for k in req if k not in ("method", "path", "body") and not k.startswith("_")]
    if extra:
        return ["unknown keys in the recorded request: %s" % ", ".join(extra)]
    method, path, body = req.get("method"), req.get("path"), req.get("body")
    if not isinstance(method, str) or not isinstance(path, str):
        return ["`method` and `path` must be strings"]
    if "?" in path:
        return ["unexpected query string in %r (the sink's requests carry none)" % path]
    r = route(method, path)
    if r is None:
        return ["unknown endpoint %s %s (not one the sink may call)" % (method, path)]
    obj, model, kind, groups = r
    chk = Checker()
    if kind == "assoc_default":
        for name, ident in zip(("communication id", "contact id"), groups):
            if not ident.isdigit():
                chk.err("path", "%s must be a HubSpot record id (digits), got %r" % (name, ident))
        if body not in (None, {}, ""):
            chk.err("body", "PUT .../associations/default/... takes no body")
        return chk.errors
    if not isinstance(body, dict):
        return ["body: expected a JSON object, got %s" % jtype(body)]
    chk.build(body, model, "", obj)
    if not chk.errors:
        chk.official_deserialize(body, model, obj)
    chk.semantic(kind, body)
    # one problem reported once, in order
    return list(dict.fromkeys(chk.errors))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", default="-", help="JSONL file (default: stdin)")
    ap.add_argument("--check-expect", action="store_true", help="self-test mode, see above")
    ap.add_argument("--quiet", action="store_true", help="print only FAIL lines and the summary")
    ap.add_argument("--version", action="store_true", help="print the hubspot-api-client version")
    a = ap.parse_args()
    if a.version:
        print("hubspot-api-client %s" % CLIENT_VERSION)
        return 0
    try:
        fh = sys.stdin if a.file == "-" else open(a.file, encoding="utf-8")
        lines = fh.read().splitlines()
    except OSError as e:
        print("cannot read %s: %s" % (a.file, e), file=sys.stderr)
        return 2
    n = ok = failed = unmet = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        n += 1
        try:
            req = json.loads(line)
        except ValueError as e:
            problems, label = ["not valid JSON: %s" % e], "?"
            req = None
        else:
            problems = validate_request(req)
            label = "%s %s" % (req.get("method"), req.get("path")) if isinstance(req, dict) else "?"
        if problems:
            failed += 1
            reason = "; ".join(problems)
            print("FAIL line %d: %s: %s" % (lineno, label, reason))
        else:
            ok += 1
            if not a.quiet:
                print("OK   line %d: %s" % (lineno, label))
        if a.check_expect:
            want = req.get("_expect") if isinstance(req, dict) else None
            if want is None and problems:
                unmet += 1
                print("  EXPECTATION NOT MET: line %d should pass" % lineno)
            elif want is not None and not (problems and want in reason):
                unmet += 1
                print("  EXPECTATION NOT MET: line %d should FAIL with %r" % (lineno, want))
            elif want is not None:
                print("  as expected (%r)" % want)
    print("validated %d requests: %d ok, %d failed" % (n, ok, failed))
    if a.check_expect:
        print("expectations: %d lines, %d not met" % (n, unmet))
        return 0 if unmet == 0 else 1
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
