#!/usr/bin/env bash
# The deployment files in deploy/ (docs/deploy.md), checked without a
# container engine: every YAML file parses (python3-yaml) and has the
# expected structure (compose: a server and three clients over mutual TLS,
# the server's --out on a named volume, read-only data; Kubernetes: a
# Deployment of one server, its Service and claim, a StatefulSet of three
# clients with a data claim each); the Dockerfile builds with the project's
# own scripts on Debian 12 and runs on bookworm-slim as a non-root user; and
# every fedc command line, in the manifests and in docs/deploy.md, uses only
# flags that `fedc COMMAND --help` lists. The checker is also run on a copy
# with a misspelt flag, which it must reject.
source "$(dirname "$0")/lib.sh"
: "${FEDC_SOURCE_DIR:?FEDC_SOURCE_DIR must point to the source tree}"
"$PY" -c 'import yaml' 2>/dev/null || fail "$PY cannot import yaml (Debian package python3-yaml)"

for c in server client certs partition; do
  "$FEDC_BIN" "$c" --help > "$WORK/$c.help" || fail "fedc $c --help failed"
done

cat > "$WORK/check.py" <<'PY'
import glob, os, re, shlex, sys
import yaml

deploy, doc, helpdir = sys.argv[1], sys.argv[2], sys.argv[3]
errors = []
def err(msg):
    errors.append(msg)

FLAG = re.compile(r'(?<![\w-])--[a-z][a-z0-9-]*')
flags = {}
for c in ("server", "client", "certs", "partition"):
    with open(os.path.join(helpdir, c + ".help")) as f:
        flags[c] = set(FLAG.findall(f.read())) | {"--help"}
for c in ("server", "client"):
    if "--cert" not in flags[c] or "--ca" not in flags[c]:
        sys.exit("fedc %s --help lists no --cert/--ca: cannot check flags" % c)

def check_flags(where, sub, text):
    bad = sorted(set(FLAG.findall(text)) - flags[sub])
    if bad:
        err("%s: fedc %s has no flag %s" % (where, sub, ", ".join(bad)))

def as_list(v):
    if v is None:
        return []
    if isinstance(v, str):
        return shlex.split(v)
    return [str(x) for x in v]

def command_text(where, entrypoint, command):
    """The fedc subcommand a container runs and its command line as text.
    Without an entrypoint the image's, ["fedc"], is used."""
    if entrypoint:
        text = " ".join(entrypoint + command)
    else:
        text = " ".join(["fedc"] + command)
    subs = set(re.findall(r'\bfedc\s+(server|client)\b', text))
    if len(subs) != 1:
        err("%s: runs %s, want exactly one of fedc server / fedc client"
            % (where, sorted(subs) or "no fedc command"))
        return None, text
    sub = subs.pop()
    check_flags(where, sub, text)
    if "--insecure" in text:
        err("%s: --insecure: the deployment must use TLS" % where)
    want = ["--cert", "--key", "--ca"]
    missing = [f for f in want if f not in FLAG.findall(text)]
    if missing:
        err("%s: mutual TLS needs %s" % (where, ", ".join(missing)))
    return sub, text

def flag_value(text, flag):
    m = re.search(re.escape(flag) + r'\s+"?([^\s";]+)', text)
    return m.group(1) if m else None

# --- every YAML file parses ------------------------------------------------
docs = {}
yamls = sorted(glob.glob(os.path.join(deploy, "**", "*.yaml"), recursive=True) +
               glob.glob(os.path.join(deploy, "**", "*.yml"), recursive=True))
if not yamls:
    err("no YAML files under %s" % deploy)
for path in yamls:
    try:
        with open(path) as f:
            docs[path] = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        err("%s: not valid YAML: %s" % (path, e))

# --- compose ---------------------------------------------------------------
compose = os.path.join(deploy, "compose.yaml")
if compose not in docs:
    err("%s missing" % compose)
else:
    c = docs[compose][0]
    services = c.get("services") or {}
    subs = {}
    texts = {}
    for name, s in services.items():
        sub, text = command_text("compose service %s" % name,
                                 as_list(s.get("entrypoint")), as_list(s.get("command")))
        subs[name], texts[name] = sub, text
        if not s.get("restart"):
            err("compose service %s: no restart policy" % name)
    servers = [n for n in services if subs[n] == "server"]
    clients = [n for n in services if subs[n] == "client"]
    if servers != ["server"]:
        err("compose: want one fedc server in service 'server', found %s" % servers)
    if len(clients) != 3:
        err("compose: want 3 client services, found %d (%s)" % (len(clients), clients))
    named = set((c.get("volumes") or {}).keys())
    if "server" in services:
        t = texts["server"]
        out = flag_value(t, "--out")
        if not out or flag_value(t, "--resume") != out:
            err("compose server: want --out DIR, and --resume DIR when a checkpoint is there")
        vols = [str(v) for v in services["server"].get("volumes") or []]
        if not any(v.split(":")[0] in named and v.split(":")[1] == out for v in vols):
            err("compose server: --out %s is not on a named volume" % out)
    data_sources = set()
    for n in clients:
        data = flag_value(texts[n], "--data")
        vols = [str(v) for v in services[n].get("volumes") or []]
        mounts = [v for v in vols if v.split(":")[1:2] == [data]]
        if len(mounts) != 1 or not mounts[0].endswith(":ro"):
            err("compose %s: --data %s is not one read-only volume" % (n, data))
        else:
            data_sources.add(mounts[0].split(":")[0])
        for f in ("--ca", "--cert", "--key"):
            p = flag_value(texts[n], f)
            if not any(v.split(":")[1:2] == [p] or (p or "").startswith(v.split(":")[1] + "/")
                       for v in vols if ":" in v):
                err("compose %s: %s %s is not mounted" % (n, f, p))
    if len(data_sources) != len(clients):
        err("compose: the clients do not each have their own data volume")

# --- Kubernetes ------------------------------------------------------------
k8s = [(p, d) for p, ds in docs.items() if os.sep + "k8s" + os.sep in p for d in ds]
kinds = {}
for p, d in k8s:
    if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
        err("%s: a document without kind/apiVersion" % p)
        continue
    kinds.setdefault(d["kind"], []).append(d)
for k in ("Deployment", "Service", "StatefulSet", "PersistentVolumeClaim"):
    if k not in kinds:
        err("k8s: no %s" % k)

_seen = {}
def containers(where, d):
    """Each container's (subcommand, command text, container, pod spec); once per object."""
    if id(d) in _seen:
        return _seen[id(d)]
    spec = d.get("spec", {}).get("template", {}).get("spec", {})
    out = []
    for ct in spec.get("containers") or []:
        w = "%s %s container %s" % (where, d["metadata"]["name"], ct.get("name"))
        sub, text = command_text(w, as_list(ct.get("command")), as_list(ct.get("args")))
        out.append((sub, text, ct, spec))
    _seen[id(d)] = out
    return out

for d in kinds.get("Deployment", []):
    if d["spec"].get("replicas") != 1:
        err("k8s Deployment %s: want replicas: 1" % d["metadata"]["name"])
    for sub, text, ct, spec in containers("k8s Deployment", d):
        if sub != "server":
            continue
        out = flag_value(text, "--out")
        mounts = {m["mountPath"]: m["name"] for m in ct.get("volumeMounts") or []}
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        v = vols.get(mounts.get(out), {})
        if "persistentVolumeClaim" not in v:
            err("k8s Deployment: --out %s is not on a PersistentVolumeClaim" % out)
        if flag_value(text, "--resume") != out:
            err("k8s Deployment: no --resume %s" % out)
for d in kinds.get("StatefulSet", []):
    if d["spec"].get("replicas") != 3:
        err("k8s StatefulSet %s: want replicas: 3" % d["metadata"]["name"])
    templates = [t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates") or []]
    for sub, text, ct, spec in containers("k8s StatefulSet", d):
        data = flag_value(text, "--data")
        mounts = {m["mountPath"]: m for m in ct.get("volumeMounts") or []}
        m = mounts.get(data)
        if not m or m["name"] not in templates or not m.get("readOnly"):
            err("k8s StatefulSet: --data %s is not a read-only volumeClaimTemplate" % data)
for k in ("Deployment", "StatefulSet"):
    if not any(sub for d in kinds.get(k, []) for sub, *_ in containers("k8s " + k, d)):
        err("k8s %s: no fedc container" % k)

# --- fedc lines anywhere in the files, comments included, and in the doc ---
LINE = re.compile(r'\bfedc\s+(server|client|certs|partition)\b(.*)')
for path in [p for p in glob.glob(os.path.join(deploy, "**", "*"), recursive=True)
             if os.path.isfile(p)] + [doc]:
    with open(path) as f:
        lines = f.read().replace("\\\n", " ").splitlines()
    for i, line in enumerate(lines, 1):
        for m in LINE.finditer(line):
            rest = re.split(r'[;|&#`]|\s--\s', m.group(2))[0]
            check_flags("%s:%d" % (path, i), m.group(1), rest)

# --- Dockerfile --------------------------------------------------------------
dockerfile = os.path.join(deploy, "Dockerfile")
with open(dockerfile) as f:
    text = f.read().replace("\\\n", " ")
stages, cur = [], None
for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    word, _, arg = line.partition(" ")
    if word.upper() == "FROM":
        cur = {"from": arg.split(), "lines": []}
        stages.append(cur)
    elif cur is not None:
        cur["lines"].append((word.upper(), arg.strip()))
if len(stages) < 2:
    err("Dockerfile: want a multi-stage build, found %d stage(s)" % len(stages))
else:
    build, final = stages[0], stages[-1]
    if build["from"][0] != "debian:bookworm":
        err("Dockerfile: the build stage is %s, want debian:bookworm" % build["from"][0])
    runs = [a for w, a in build["lines"] if w == "RUN"]
    i_deps = next((i for i, r in enumerate(runs) if "scripts/setup-deps.sh" in r), None)
    i_build = next((i for i, r in enumerate(runs) if "scripts/build.sh" in r), None)
    if i_deps is None or i_build is None or i_deps > i_build:
        err("Dockerfile: the build stage must RUN scripts/setup-deps.sh, then scripts/build.sh")
    if not any("cmake --install" in r for r in runs):
        err("Dockerfile: the build stage does not cmake --install")
    if final["from"][0] != "debian:bookworm-slim":
        err("Dockerfile: the runtime stage is %s, want debian:bookworm-slim" % final["from"][0])
    users = [a for w, a in final["lines"] if w == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        err("Dockerfile: the runtime stage must end as a non-root USER")
    ep = [a for w, a in final["lines"] if w == "ENTRYPOINT"]
    if not ep or yaml.safe_load(ep[-1]) != ["fedc"]:
        err('Dockerfile: want ENTRYPOINT ["fedc"]')
    if not any("libfedc.so" in a for w, a in final["lines"] if w == "COPY"):
        err("Dockerfile: the runtime stage does not copy libfedc")

for e in errors:
    print("  " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY

deploy="$FEDC_SOURCE_DIR/deploy"
doc="$FEDC_SOURCE_DIR/docs/deploy.md"
[[ -d "$deploy" && -f "$doc" ]] || fail "deploy/ or docs/deploy.md missing"
"$PY" "$WORK/check.py" "$deploy" "$doc" "$WORK" || fail "deploy files: see above"
pass "deploy/: YAML parses, compose and k8s structure, Dockerfile stages, fedc flags"

# The checker must notice a flag fedc does not have.
cp -r "$deploy" "$WORK/deploy-bad"
sed -i 's/--heartbeat/--heartbeet/' "$WORK/deploy-bad/k8s/clients.yaml"
if "$PY" "$WORK/check.py" "$WORK/deploy-bad" "$doc" "$WORK" 2> "$WORK/bad.log"; then
  fail "the checker accepted --heartbeet"
fi
grep -q -- "--heartbeet" "$WORK/bad.log" || { cat "$WORK/bad.log" >&2; fail "the checker did not name --heartbeet"; }
pass "test_deploy_files"
