#!/usr/bin/env python3
"""Renders and checks deploy/kubernetes without kustomize or a cluster.

Neither kustomize nor Helm can be installed in CI, so this renders the
kustomizations itself. It understands exactly the fields the base and the
overlays use (`resources`, `namespace`, `images`, `patches` with
strategic-merge files) and refuses any other, so a kustomization that
grows beyond what is checked here fails loudly instead of being validated
wrongly.

    deploy_check.py render DIR OUT.yaml   render one kustomization
    deploy_check.py check DIR...          render each, validate every
                                          resource with kubernetes-validate,
                                          and check what ties them together
    deploy_check.py compose-env FILE SERVICE OUT_DIR
                                          a Compose service's environment
    deploy_check.py known-variables SRC_DIR ENV_FILE...
                                          every WS_* name is read by the server
    deploy_check.py self-test DIR         each check fails on what it guards

The cross-checks are the mistakes a schema cannot see: a Service or a
PodDisruptionBudget that selects no pod, a probe on the wrong path, a grace
period shorter than the drain, a hardening setting an overlay dropped.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import yaml

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}

# Kinds that have no namespace (the only cluster-scoped kind used here, and
# the ones a copy of an overlay is likely to add).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
}

# Kinds kubernetes-validate has no schema for; checked by hand below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

KUBERNETES_VERSION = os.environ.get("KUBERNETES_VERSION", "1.37.0")


class CheckError(Exception):
    """A problem in the manifests, with where it is."""


# --- rendering ---------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict]:
    with path.open() as f:
        docs = [doc for doc in yaml.safe_load_all(f) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise CheckError(f"{path}: every document must be a Kubernetes object")
    return docs


def render(directory: Path) -> list[dict]:
    """The objects `kustomize build DIRECTORY` would print (for our subset)."""
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise CheckError(f"{directory}: no kustomization.yaml")
    with kfile.open() as f:
        kustomization = yaml.safe_load(f)
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        raise CheckError(
            f"{kfile}: fields {sorted(unknown)} are not understood by .ci/deploy_check.py; "
            f"use only {sorted(KUSTOMIZATION_FIELDS)} or teach the script"
        )

    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            objects.extend(render(target))
        elif target.is_file():
            objects.extend(load_yaml_documents(target))
        else:
            raise CheckError(f"{kfile}: resource {entry} does not exist")

    # kustomize's order: patches, then the namespace, then images.
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise CheckError(f"{kfile}: only `patches: - path: FILE` entries are understood")
        for patch in load_yaml_documents(directory / patch_entry["path"]):
            apply_patch(objects, patch, directory / patch_entry["path"])

    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace

    for image in kustomization.get("images", []):
        unknown = set(image) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise CheckError(f"{kfile}: image fields {sorted(unknown)} are not understood")
        replaced = sum(set_image(obj, image) for obj in objects)
        if replaced == 0:
            raise CheckError(f"{kfile}: images entry {image['name']} matches no container")

    ids = [object_id(obj) for obj in objects]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise CheckError(f"{directory}: duplicate objects {sorted(duplicates)}")
    return objects


def object_id(obj: dict) -> tuple[str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["kind"], meta.get("namespace", ""), meta.get("name", ""))


def apply_patch(objects: list[dict], patch: dict, source: Path) -> None:
    meta = patch.get("metadata", {})
    matches = [
        obj
        for obj in objects
        if obj["kind"] == patch["kind"]
        and obj.get("apiVersion") == patch.get("apiVersion")
        and obj["metadata"].get("name") == meta.get("name")
        and ("namespace" not in meta or obj["metadata"].get("namespace") == meta["namespace"])
    ]
    if len(matches) != 1:
        raise CheckError(
            f"{source}: patch for {patch['kind']}/{meta.get('name')} matches {len(matches)} objects"
        )
    merged = strategic_merge(matches[0], patch, f"{source}")
    matches[0].clear()
    matches[0].update(merged)


def strategic_merge(base, patch, where: str):
    """A strategic merge patch as kustomize applies it to the fields used
    here: maps merge key by key, lists of named items (containers, env,
    volumes, volumeMounts, ports) merge by `name`, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in patch):
            raise CheckError(f"{where}: strategic-merge directives ($patch, ...) are not understood")
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, f"{where}.{key}")
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and named_list(base) and named_list(patch):
        out = copy.deepcopy(base)
        for item in patch:
            existing = next((i for i, b in enumerate(out) if b["name"] == item["name"]), None)
            if existing is None:
                out.append(copy.deepcopy(item))
            else:
                out[existing] = strategic_merge(out[existing], item, f"{where}[{item['name']}]")
        return out
    return copy.deepcopy(patch)


def named_list(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def set_image(obj: dict, image: dict) -> int:
    replaced = 0
    for container in pod_containers(obj):
        reference = container.get("image", "")
        name, tag, digest = split_image(reference)
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        tag = image.get("newTag", tag)
        digest = image.get("digest", digest)
        container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
        replaced += 1
    return replaced


def split_image(reference: str) -> tuple[str, str, str]:
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    else:
        tag = ""
    return name, tag, digest


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "Pod":
        return obj["spec"]
    return None


def pod_containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


# --- checks ------------------------------------------------------------------


def validate_schemas(objects: list[dict], label: str, quiet: bool = False) -> int:
    import kubernetes_validate

    checked = 0
    for obj in objects:
        key = (obj.get("apiVersion"), obj["kind"])
        name = f"{label}: {obj['kind']}/{obj['metadata'].get('name')}"
        if key in CUSTOM_KINDS:
            check_service_monitor_shape(obj, name)
        else:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                raise CheckError(f"{name}: {path}: {e.message}") from None
            except kubernetes_validate.SchemaNotFoundError:
                raise CheckError(f"{name}: kubernetes {KUBERNETES_VERSION} has no schema for it") from None
        checked += 1
        if not quiet:
            print(f"ok  {name}")
    return checked


def check_service_monitor_shape(obj: dict, name: str) -> None:
    """The fields of monitoring.coreos.com/v1 ServiceMonitor this repository
    uses, typed as the Prometheus Operator's CRD types them."""
    spec = obj.get("spec")
    if set(obj) - {"apiVersion", "kind", "metadata", "spec"}:
        raise CheckError(f"{name}: unexpected top-level fields")
    if not isinstance(spec, dict) or set(spec) - {"selector", "endpoints", "namespaceSelector", "jobLabel"}:
        raise CheckError(f"{name}: spec may hold selector, endpoints, namespaceSelector, jobLabel")
    if not isinstance(spec.get("selector", {}).get("matchLabels"), dict):
        raise CheckError(f"{name}: spec.selector.matchLabels is required here")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise CheckError(f"{name}: spec.endpoints must be a non-empty list")
    allowed = {"port", "path", "interval", "scrapeTimeout", "scheme"}
    for endpoint in endpoints:
        if set(endpoint) - allowed:
            raise CheckError(f"{name}: endpoint fields {sorted(set(endpoint) - allowed)} not checked here")
        if not isinstance(endpoint.get("port"), str):
            raise CheckError(f"{name}: endpoint port must be the Service port's name")
        for field in ("interval", "scrapeTimeout"):
            value = endpoint.get(field)
            if value is not None and not (isinstance(value, str) and value[:-1].isdigit() and value[-1] in "smh"):
                raise CheckError(f"{name}: endpoint {field} {value!r} is not a duration like 15s")


def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", selector)
    if "matchExpressions" in selector:
        raise CheckError("matchExpressions are not checked here; use matchLabels")
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def find(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str, label: str) -> dict:
    found = find(objects, kind)
    if len(found) != 1:
        raise CheckError(f"{label}: expected exactly one {kind}, found {len(found)}")
    return found[0]


def duration_seconds(value: str) -> float:
    if value.isdigit():
        return int(value) / 1000
    for suffix, factor in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if value.endswith(suffix) and value[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(value[: -len(suffix)]) * factor
    raise CheckError(f"cannot read duration {value!r}")


def cross_check(objects: list[dict], label: str) -> int:
    """What ties the objects together, and the hardening the issue asks for.
    Returns the number of checks made."""
    checks = 0

    def expect(condition: bool, message: str) -> None:
        nonlocal checks
        checks += 1
        if not condition:
            raise CheckError(f"{label}: expected {message}")

    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] not in CLUSTER_SCOPED}
    expect(len(namespaces) == 1 and None not in namespaces, f"all objects in one namespace, got {namespaces}")

    deployment = one(objects, "Deployment", label)
    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    spec = template["spec"]
    expect(selects(deployment["spec"]["selector"], pod_labels), "the Deployment selects its own pods")

    for kind in ("Service", "PodDisruptionBudget"):
        obj = one(objects, kind, label)
        expect(selects(obj["spec"]["selector"], pod_labels), f"the {kind} selects the gateway pods")
    policy = one(objects, "NetworkPolicy", label)
    expect(selects(policy["spec"]["podSelector"], pod_labels), "the NetworkPolicy selects the gateway pods")
    expect(
        set(policy["spec"].get("policyTypes", [])) == {"Ingress", "Egress"},
        "the NetworkPolicy restricts both ingress and egress",
    )

    hpa = one(objects, "HorizontalPodAutoscaler", label)
    target = hpa["spec"]["scaleTargetRef"]
    expect(
        target["kind"] == "Deployment" and target["name"] == deployment["metadata"]["name"],
        "the HPA scales the Deployment",
    )
    expect(hpa["spec"]["minReplicas"] >= 2, "the HPA keeps at least two replicas (the PDB then allows drains)")

    container = next(c for c in spec["containers"] if c["name"] == "ws-realtime")
    port_names = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    expect("http" in port_names, "the container names its port `http`")
    expect(
        any(m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"] if m["type"] == "Resource"),
        "the HPA scales on CPU",
    )
    expect("cpu" in container.get("resources", {}).get("requests", {}), "a CPU request (the HPA's utilisation base)")
    expect("memory" in container.get("resources", {}).get("limits", {}), "a memory limit")

    service = one(objects, "Service", label)
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port in service_ports.values():
        target_port = port.get("targetPort")
        expect(
            target_port in port_names or target_port in port_names.values(),
            f"Service port {port['name']} targets a container port",
        )
    for monitor in find(objects, "ServiceMonitor"):
        expect(
            selects(monitor["spec"]["selector"], service["metadata"].get("labels", {})),
            "the ServiceMonitor selects the Service",
        )
        for endpoint in monitor["spec"]["endpoints"]:
            expect(endpoint["port"] in service_ports, f"ServiceMonitor port {endpoint['port']} is a Service port")
            expect(endpoint.get("path") == "/metrics", "the ServiceMonitor scrapes /metrics")

    probes = {
        "startupProbe": "/health",
        "readinessProbe": "/ready",
        "livenessProbe": "/health",
    }
    for probe, path in probes.items():
        http = container.get(probe, {}).get("httpGet", {})
        expect(http.get("path") == path, f"{probe} on {path}")
        expect(http.get("port") in port_names or http.get("port") in port_names.values(), f"{probe} on the http port")

    # The drain: SIGTERM comes after preStop; the pod must not be killed
    # before WS_SHUTDOWN_TIMEOUT_SECONDS has run out.
    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        maps = [o for o in find(objects, "ConfigMap") if o["metadata"]["name"] == ref]
        expect(len(maps) == 1, f"envFrom ConfigMap {ref} exists")
        env.update(maps[0].get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    shutdown = int(env.get("WS_SHUTDOWN_TIMEOUT_SECONDS", "10"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    expect(pre_stop > 0, "a preStop sleep lets endpoint removal spread before the drain")
    expect(
        grace > pre_stop + shutdown,
        f"terminationGracePeriodSeconds {grace} > preStop {pre_stop} + WS_SHUTDOWN_TIMEOUT_SECONDS {shutdown}",
    )
    expect(
        container["readinessProbe"].get("periodSeconds", 10) * container["readinessProbe"].get("failureThreshold", 3)
        < grace,
        "readiness notices the drain well within the grace period",
    )
    bind = env.get("WS_BIND_ADDRESS", ":8080")
    expect(bind.rsplit(":", 1)[-1] == str(port_names["http"]), f"WS_BIND_ADDRESS {bind} is the http container port")

    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            expect(
                any(o["metadata"]["name"] == name for o in find(objects, "ConfigMap")),
                f"volume ConfigMap {name} exists",
            )
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
    expect(all(m.get("readOnly") for m in mounts.values()), "every volume is mounted read-only")
    secret_file = env.get("WS_AUTH_SECRET_FILE", "")
    expect(
        any(
            secret_file.startswith(m["mountPath"].rstrip("/") + "/")
            and any("secret" in v for v in spec["volumes"] if v["name"] == m["name"])
            for m in mounts.values()
        ),
        "WS_AUTH_SECRET_FILE points into the mounted Secret",
    )

    # The NixOS module's hardening, in Kubernetes terms.
    pod_security = spec.get("securityContext", {})
    security = container.get("securityContext", {})
    expect(spec.get("automountServiceAccountToken") is False, "no service account token is mounted")
    expect(pod_security.get("runAsNonRoot") is True, "pod runAsNonRoot")
    expect(security.get("runAsNonRoot") is True, "container runAsNonRoot")
    expect(security.get("runAsUser", pod_security.get("runAsUser", 0)) >= 10000, "a high non-root UID")
    expect(security.get("readOnlyRootFilesystem") is True, "read-only root file system")
    expect(security.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    expect(security.get("privileged") in (None, False), "not privileged")
    expect(security.get("capabilities", {}).get("drop") == ["ALL"], "every capability dropped")
    expect(not security.get("capabilities", {}).get("add"), "no capability added")
    expect(
        pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        and security.get("seccompProfile", {}).get("type", "RuntimeDefault") == "RuntimeDefault",
        "seccomp RuntimeDefault",
    )
    expect(not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), "no host namespaces")
    return checks


def write_env_files(objects: list[dict], out_dir: Path) -> None:
    """The gateway's environment and TOML file as the pod would see them,
    for `ws-realtime check-config` (.ci/deploy runs it)."""
    deployment = one(objects, "Deployment", str(out_dir))
    container = next(c for c in pod_spec(deployment)["containers"] if c["name"] == "ws-realtime")
    lines = []
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        config_map = next(o for o in find(objects, "ConfigMap") if o["metadata"]["name"] == ref)
        lines.extend(f"{k}={v}" for k, v in config_map.get("data", {}).items())
    for item in container.get("env", []):
        if "value" in item and item["name"] != "WS_AUTH_SECRET_FILE":
            lines.append(f"{item['name']}={item['value']}")
        elif "secretKeyRef" in item.get("valueFrom", {}):
            # The pod gets these from the Secret (Kafka SASL credentials):
            # stand in for it, since librdkafka refuses SASL without them
            # when check-config builds the publish producer.
            lines.append(f"{item['name']}=check-config-placeholder")
    (out_dir / "env").write_text("\n".join(lines) + "\n")
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    if config_path:
        for volume in pod_spec(deployment).get("volumes", []):
            mount = next((m for m in container.get("volumeMounts", []) if m["name"] == volume["name"]), None)
            if mount and "configMap" in volume and config_path.startswith(mount["mountPath"] + "/"):
                key = config_path[len(mount["mountPath"]) + 1 :]
                config_map = next(o for o in find(objects, "ConfigMap") if o["metadata"]["name"] == volume["configMap"]["name"])
                (out_dir / "config.toml").write_text(config_map["data"][key])


def compose_env(compose_file: Path, service: str, out_dir: Path) -> None:
    """The environment Compose gives `service`, for `check-config`."""
    with compose_file.open() as f:
        compose = yaml.safe_load(f)
    environment = compose["services"][service].get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "env").write_text("".join(f"{k}={v}\n" for k, v in environment.items()))
    print(f"ok  {compose_file}: {len(environment)} variables of service {service}")


def known_variables(source_dir: Path, env_files: list[str]) -> None:
    """Every WS_* name deployed is one the server reads: its sources name
    each variable as a string literal (`WS_KAFKA_PROPERTY_<NAME>` is open)."""
    import re

    known = set()
    for path in source_dir.rglob("*.rs"):
        known.update(re.findall(r'"(WS_[A-Z0-9_]+)"', path.read_text()))
    if len(known) < 20:
        raise CheckError(f"found only {len(known)} WS_* names in {source_dir}; has the configuration moved?")
    for env_file in env_files:
        for line in Path(env_file).read_text().splitlines():
            name = line.split("=", 1)[0]
            if not name.startswith("WS_") or name.startswith("WS_KAFKA_PROPERTY_"):
                continue
            if name not in known:
                raise CheckError(f"{env_file}: {name} is not a variable the server reads")
    print(f"ok  every WS_* name is one of the {len(known)} the server reads")


def self_test(directory: Path) -> None:
    """Each check can fail: breaks a rendering of DIRECTORY in the ways the
    checks exist for and expects every break to be reported."""

    def container(objects):
        deployment = one(objects, "Deployment", "self-test")
        return next(c for c in pod_spec(deployment)["containers"] if c["name"] == "ws-realtime")

    def env_map(objects):
        return next(o for o in find(objects, "ConfigMap") if o["metadata"]["name"] == "ws-realtime-env")["data"]

    breaks = {
        "a misspelled field": lambda o: container(o).update(imagePulPolicy="Always"),
        "a writable root file system": lambda o: container(o)["securityContext"].update(readOnlyRootFilesystem=False),
        "a capability added": lambda o: container(o)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        "privilege escalation": lambda o: container(o)["securityContext"].update(allowPrivilegeEscalation=True),
        "seccomp unconfined": lambda o: pod_spec(one(o, "Deployment", ""))["securityContext"].update(
            seccompProfile={"type": "Unconfined"}
        ),
        "a drain longer than the grace period": lambda o: env_map(o).update(WS_SHUTDOWN_TIMEOUT_SECONDS="60"),
        "a Service selecting no pod": lambda o: one(o, "Service", "")["spec"]["selector"].update(
            {"app.kubernetes.io/name": "other"}
        ),
        "readiness on /health": lambda o: container(o)["readinessProbe"]["httpGet"].update(path="/health"),
        "the listener off the container port": lambda o: env_map(o).update(WS_BIND_ADDRESS=":9000"),
        "an HPA on another Deployment": lambda o: one(o, "HorizontalPodAutoscaler", "")["spec"][
            "scaleTargetRef"
        ].update(name="other"),
        "no CPU request": lambda o: container(o)["resources"]["requests"].pop("cpu"),
    }
    for what, mutate in breaks.items():
        objects = render(directory)
        mutate(objects)
        try:
            validate_schemas(objects, f"self-test ({what})", quiet=True)
            cross_check(objects, f"self-test ({what})")
        except CheckError as e:
            print(f"ok  caught {what}: {e}")
            continue
        raise CheckError(f"self-test: {what} was not caught")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "self-test":
        self_test(Path(argv[1]))
        return 0
    if len(argv) == 4 and argv[0] == "compose-env":
        compose_env(Path(argv[1]), argv[2], Path(argv[3]))
        return 0
    if len(argv) >= 2 and argv[0] == "known-variables":
        known_variables(Path(argv[1]), argv[2:])
        return 0
    if len(argv) == 3 and argv[0] == "render":
        objects = render(Path(argv[1]))
        with open(argv[2], "w") as f:
            yaml.safe_dump_all(objects, f, sort_keys=False)
        return 0
    if len(argv) >= 2 and argv[0] == "check":
        # Each kustomization: validate, cross-check, and leave the rendering
        # plus the pod's environment in $DEPLOY_RENDER_DIR for the next steps.
        out_root = Path(os.environ.get("DEPLOY_RENDER_DIR", "/tmp/ws-realtime-deploy-render"))
        total_objects = total_checks = 0
        for directory in argv[1:]:
            label = directory
            objects = render(Path(directory))
            total_objects += validate_schemas(objects, label)
            checks = cross_check(objects, label)
            total_checks += checks
            print(f"ok  {label}: {checks} cross-checks")
            out_dir = out_root / directory.strip("/").replace("/", "_")
            out_dir.mkdir(parents=True, exist_ok=True)
            with (out_dir / "rendered.yaml").open("w") as f:
                yaml.safe_dump_all(objects, f, sort_keys=False)
            write_env_files(objects, out_dir)
        print(f"kubernetes-validate ({KUBERNETES_VERSION}, strict): {total_objects} objects valid; "
              f"{total_checks} cross-checks passed")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except CheckError as e:
        print(f"deploy check FAILED: {e}", file=sys.stderr)
        sys.exit(1)
