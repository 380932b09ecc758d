"""The one settings file (YAML, path in env NETVIZ_CONFIG), validated before anything is changed.

Why strict: every value here ends up in a Kubernetes object, a Prometheus config or a shell command
on a router. Unknown keys are rejected (a typo must not silently fall back to a default), strings
that reach commands are restricted to plain character sets, and secrets are only ever referenced
(env var name or file path), never written inline. All errors are collected and reported together
as `path: problem: fix` lines.

This is the pure layer: it imports nothing that talks to the world (no SSH, HTTP, Kubernetes or Dagster
client, nothing from routers/ or resources/). Rules that live with their implementation (each router
platform's) are applied after parsing by loading.py, which the pipeline uses to load settings.
"""
from __future__ import annotations

import ipaddress
import os
import re
from decimal import Decimal, DecimalException, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator, model_validator)

ENV_VAR = "NETVIZ_CONFIG"
# Kubernetes' own namespaces: no netviz step may name one
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def url_join(base, path: str) -> str:
    """base URL + path with exactly one slash between (pydantic adds a trailing slash only to bare hosts)."""
    return str(base).rstrip("/") + "/" + path.lstrip("/")


class SettingsError(ValueError):
    """Settings are unusable; `errors` holds one `path: message` line per problem."""

    def __init__(self, errors: list[str], source: str = "settings"):
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} problem(s)\n" + "\n".join(f"  {e}" for e in errors))


# ---------------------------------------------------------------- reusable string types
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:-]*(@sha256:[a-f0-9]{64})?")
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def _matching(pattern: re.Pattern, what: str):
    def check(v: str) -> str:
        if not pattern.fullmatch(v):
            raise ValueError(f"{v!r} is not {what}")
        return v
    return AfterValidator(check)


def _ip_literal(v: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(v)))
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address literal (e.g. 198.18.0.1); host names are not "
                         "accepted here") from None


_QUANTITY_EXPONENTS = {"n": -3, "u": -2, "m": -1, "K": 1, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def parse_quantity(quantity: str) -> Decimal:
    """A Kubernetes quantity as a number, exactly as the kubernetes client's kubernetes.utils.parse_quantity
    (written out here: importing kubernetes.utils loads the whole API client, and settings load nothing
    that talks to the world). Binary suffixes Ki..Ei, decimal n u m k M G T P E; ValueError otherwise."""
    number, suffix = quantity, None
    if len(quantity) >= 2 and quantity[-1] == "i":
        if quantity[-2] in _QUANTITY_EXPONENTS:
            number, suffix = quantity[:-2], quantity[-2:]
    elif quantity[-1:] in _QUANTITY_EXPONENTS:
        number, suffix = quantity[:-1], quantity[-1:]
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"Invalid number format: {number}") from None
    if suffix is None:
        return value
    if suffix.endswith("i") and suffix[0] not in "KMGTPE":  # "ki", "mi", "ni", "ui" are no binary suffixes
        raise ValueError(f"{quantity} has unknown suffix")
    base = 1024 if suffix.endswith("i") else 1000
    try:
        return value * (base ** Decimal(_QUANTITY_EXPONENTS[suffix[0]]))
    except DecimalException as exc:
        raise ValueError(f"Invalid quantity: {quantity}") from exc


def _quantity(v: str) -> str:
    """A Kubernetes resource quantity ("512Mi", "150m", "1.5G"), parsed as the kubernetes client does."""
    try:
        n = parse_quantity(v.strip())
    except (ValueError, ArithmeticError):
        raise ValueError(f"{v!r} is not a Kubernetes quantity (e.g. 512Mi, 1Gi, 150m)") from None
    if n <= 0:
        raise ValueError(f"{v!r} must be a positive quantity (e.g. 512Mi)")
    return v


def _http_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{v!r} is not an http(s) URL (e.g. http://prometheus.monitoring:9090)")
    if parts.username or parts.password:
        raise ValueError("credentials inside the URL are not accepted: use a token_env or token_file")
    return v.rstrip("/")


K8sName = Annotated[str, _matching(_DNS_LABEL, "a Kubernetes name (lowercase letters, digits, '-', max 63)")]
IfName = Annotated[str, _matching(_IFNAME, "a plain interface name (letters, digits, '.', '-', '_', max 15 chars)")]
EnvName = Annotated[str, _matching(_ENV_NAME, "an environment variable name (A-Z, 0-9, '_'); give the "
                                              "variable's NAME, never the secret itself")]
IPLiteral = Annotated[str, AfterValidator(_ip_literal)]
Quantity = Annotated[str, AfterValidator(_quantity)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Image = Annotated[str, _matching(_IMAGE, "an image reference (registry/repo:tag)")]
LabelKey = Annotated[str, _matching(_LABEL_KEY, "a Kubernetes label key")]
LabelValue = Annotated[str, _matching(_LABEL_VALUE, "a Kubernetes label value (max 63, alphanumeric ends)")]


def _check_host(info: ValidationInfo) -> bool:
    return not (info.context or {}).get("skip_host_checks", False)


def _readable_file(v: Path | None, info: ValidationInfo) -> Path | None:
    if v is None:
        return v
    if not v.is_absolute():
        raise ValueError(f"{str(v)!r} is not an absolute path: write the full path")
    if any(ord(c) < 32 or ord(c) == 127 for c in str(v)):
        raise ValueError(f"{str(v)!r} contains control characters: write a plain path")
    if _check_host(info) and not (v.is_file() and os.access(v, os.R_OK)):
        raise ValueError(f"{str(v)!r} is not a readable file: create it, fix the path, or let this user read it (chown/chmod)")
    return v


def _private_key_file(v: Path | None, info: ValidationInfo) -> Path | None:
    """Like OpenSSH: a private key others may read is refused (it may already be copied)."""
    if v is not None and _check_host(info):
        mode = v.stat().st_mode & 0o777
        if mode & 0o077:
            raise ValueError(f"{str(v)!r} is readable or writable by group/others (mode {mode:04o}), as OpenSSH "
                             f"refuses too: chmod 600 {v}")
    return v


def _env_is_set(name: str | None, info: ValidationInfo) -> str | None:
    if name and _check_host(info) and not os.environ.get(name):
        raise ValueError(f"environment variable {name} is not set: export it before running")
    return name


def _repeated(items: list[str]) -> list[str]:
    """The values that occur more than once, sorted."""
    return sorted({i for i in items if items.count(i) > 1})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sections
class Cluster(_Model):
    kubeconfig: Path | None = None  # None + in_cluster: use the pod's service account
    in_cluster: bool = False
    context: str | None = None
    node_address: IPLiteral  # a node InternalIP: routers send NetFlow here (NodePort)
    # Nodes GoFlow2 may move to when its node is lost or cordoned, in order of preference (placement.py):
    # the routers then follow it. Empty: GoFlow2 stays on node_address whatever happens to that node.
    standby_node_addresses: list[IPLiteral] = []
    # A node whose kubelet has not renewed its Lease for this long is lost (the kubelet's own lease
    # duration, nodeLeaseDurationSeconds, is 40 s; it renews every 10 s).
    node_lost_after_seconds: int = Field(40, ge=20, le=600)

    _files = field_validator("kubeconfig")(_readable_file)

    @field_validator("standby_node_addresses")
    @classmethod
    def _distinct_standbys(cls, v: list[str]):
        if dup := _repeated(v):
            raise ValueError(f"repeated: {', '.join(dup)}: list each node once")
        return v

    @model_validator(mode="after")
    def _standbys_are_other_nodes(self):
        if self.node_address in self.standby_node_addresses:
            raise ValueError(f"standby_node_addresses holds node_address {self.node_address}: a standby is "
                             "another node; remove it from the list")
        return self

    @model_validator(mode="after")
    def _one_way_in(self):
        if (self.kubeconfig is None) == (not self.in_cluster):
            raise ValueError("set exactly one of kubeconfig (a path) or in_cluster: true")
        return self


class CarettaResources(_Model):
    cpu_request: Quantity = "10m"
    memory_request: Quantity = "50Mi"
    cpu_limit: Quantity = "150m"
    # Upstream's 300Mi is OOM-killed at start on kernels >= 6.1, where the two 1M-entry BPF maps
    # (~200 MiB) are charged to the pod (caretta #62/#78). preflight.py enforces the floor.
    memory_limit: Quantity = "512Mi"


class Caretta(_Model):
    namespace: K8sName = "caretta"
    image: Image = "quay.io/groundcover/caretta:v0.0.16"
    # block: error findings stop the rollout; warn: report only; standin: go ahead on nodes without kprobes
    # (a stand-in image runs where Caretta cannot), saying so in the run's metadata; other errors block
    preflight: Literal["warn", "block", "standin"] = "block"
    resolve_dns: bool = True
    poll_interval_seconds: int = Field(5, ge=1, le=300)
    resources: CarettaResources = CarettaResources()


class GoFlow2(_Model):
    namespace: K8sName = "goflow2"
    image: Image = "netsampler/goflow2:v2.2.1"
    netflow_node_port: int = Field(32055, ge=30000, le=32767)
    netflow_port: int = Field(2055, ge=1024, le=65535)  # container port (image runs as non-root)
    metrics_port: int = Field(8080, ge=1024, le=65535)
    # None: flows go to stdout (= `-transport.file` empty), rotated by the kubelet, readable via the
    # pod log API. A path: written to that file on an emptyDir for a sidecar to read.
    flows_file: Path | None = None

    @field_validator("flows_file")
    @classmethod
    def _flows_file(cls, v: Path | None):
        if v is not None and (not v.is_absolute() or v.parent == Path("/") or not re.fullmatch(r"[A-Za-z0-9/._-]+", str(v))):
            raise ValueError(f"{str(v)!r} must be an absolute path below a directory (e.g. /flows/flows.json)")
        return v


class FlowTopK(_Model):
    """Keys tracked per dimension (Space-Saving counters); the rest is folded into "other".
    A key carrying more than 1/k of a dimension's bytes is always tracked; estimates err by <= N/k."""

    talkers: int = Field(100, ge=1, le=5000)  # (exporter, src, dst): a pair as each exporter saw it
    protocols: int = Field(16, ge=1, le=256)
    ports: int = Field(50, ge=1, le=5000)  # (protocol, service port)
    exporters: int = Field(32, ge=1, le=1000)


_HOST_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")


class FlowNames(_Model):
    """Names on the talker series (`src_name`, `dst_name`, and what they are in `src_kind`, `dst_kind`;
    flowagg/names.py); the address when none is known."""

    # pods -> namespace/workload (via ReplicaSets/Jobs, as Caretta), Services -> service/<ns>/<name>,
    # nodes -> node/<name>, watched with the aggregator's own ServiceAccount `netviz-flowagg` (ClusterRole
    # of the same name: get/list/watch on pods, services, nodes, replicasets, jobs; an administrator
    # installs it). Off: no ServiceAccount, no ClusterRole, no API access.
    kubernetes: bool = True
    # Kubernetes objects indexed (pods, Services, nodes, ReplicaSets, Jobs: ~0.7 KiB of RSS each, see
    # benchmarks/flowagg_names.py; 10,000 pods with their owners ~10-14 MiB); objects beyond it are
    # counted (netviz_flow_names_overflow_total) and their addresses shown as addresses. Mind the
    # aggregator's 128Mi memory limit before raising it.
    max_entries: int = Field(50_000, ge=100, le=500_000)
    # The names each router already knows for its LAN (pfSense/OPNsense DHCP static mappings, DHCP
    # leases, /etc/hosts; read over SSH, nothing changed on the router), written by the router step to
    # ConfigMap goflow2-flowagg-hosts-<router>, which the aggregator re-reads. Off: not read, not written.
    from_routers: bool = True
    # static address -> name (LAN hosts the cluster does not know); Kubernetes names win where both
    # name one, and these win over the routers' names
    hosts: dict[IPLiteral, Annotated[str, _matching(_HOST_LABEL, "a host name (letters, digits, . _ : / @ -; max 128)")]] \
        = Field(default_factory=dict, max_length=10_000)


def _cidr(v: str) -> str:
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        raise ValueError(f"{v!r} is not a CIDR (e.g. 192.168.1.0/24)") from None


NetName = Annotated[str, _matching(re.compile(r"[a-z0-9]([-a-z0-9_]{0,30}[a-z0-9])?"),
                                   "a network name (lowercase letters, digits, '-', '_', max 32; e.g. lan, k8s-pods)")]


_BROKER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):[0-9]{1,5}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
Broker = Annotated[str, _matching(_BROKER, "a broker address host:port (e.g. kafka-0.kafka:9092)")]


class KafkaSasl(_Model):
    """SASL as GoFlow2's sarama client speaks it. The pods read the user name and password from a Secret
    (keys `username`, `password`) in goflow2.namespace; the pipeline (topic asset, lag checks) from the
    environment variables named here. Neither is ever written into a pod spec, an argument or a log."""
    mechanism: Literal["plain", "scram-sha256", "scram-sha512"]
    secret: K8sName
    username_env: EnvName
    password_env: EnvName

    _env = field_validator("username_env", "password_env")(_env_is_set)


class KafkaTls(_Model):
    """TLS to the brokers. `ca_secret`: a Secret (key `ca.crt`) with the CA that signed the brokers'
    certificates, for the pods (GoFlow2 reads it through SSL_CERT_FILE); `ca_file`: the same CA for the
    pipeline. Neither: the system's CAs."""
    ca_secret: K8sName | None = None
    ca_file: Path | None = None

    _file = field_validator("ca_file")(_readable_file)


class FlowsKafka(_Model):
    """The `kafka` transport: GoFlow2 produces each flow (protobuf, keyed by exporter, source and
    destination, so one pair always lands on one partition) and `replicas` aggregators consume the topic
    as one consumer group. docs/flow-metrics.md#kafka."""
    brokers: list[Broker] = Field(min_length=1)
    topic: Annotated[str, _matching(_TOPIC, "a Kafka topic name (letters, digits, '.', '_', '-')")] = "netviz-flows"
    partitions: int = Field(6, ge=1, le=10000)
    # None: the brokers' default.replication.factor; used only when netviz creates the topic
    replication_factor: int | None = Field(None, ge=1, le=32)
    # netviz: the topic asset creates the topic and grows its partitions; external: the user's Kafka team
    # owns it, netviz only verifies it and changes nothing
    topic_owner: Literal["netviz", "external"] = "netviz"
    consumer_group: Annotated[str, _matching(_TOPIC, "a consumer group id (letters, digits, '.', '_', '-')")] = "netviz-flowagg"
    replicas: int = Field(2, ge=1, le=256)  # aggregator replicas: at most `partitions` get any work
    # GoFlow2's sarama protocol version (its default 2.8.0 predates 4.x brokers; 3.0.0 works with 4.4)
    protocol_version: Annotated[str, _matching(re.compile(r"[0-9]+\.[0-9]+\.[0-9]+"), "a Kafka version (e.g. 3.0.0)")] = "3.0.0"
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    tls: KafkaTls | None = None
    sasl: KafkaSasl | None = None
    image: Image  # the netviz image (confluent-kafka and protobuf inside): runs the consumer aggregators

    @model_validator(mode="after")
    def _replicas_have_partitions(self):
        if self.replicas > self.partitions:
            raise ValueError(f"replicas ({self.replicas}) is more than partitions ({self.partitions}): each "
                             "partition has one consumer in a group, so the rest would idle; raise "
                             "partitions or lower replicas")
        return self


class Flows(_Model):
    """The flow aggregator. Transport `fifo` (the default, small sites): a sidecar of the GoFlow2 pod
    (stock python image, stdlib-only script from a ConfigMap) reading GoFlow2's JSON through a FIFO.
    Transport `kafka`: GoFlow2 produces to a topic and `kafka.replicas` aggregators consume it."""

    enabled: bool = True
    transport: Literal["fifo", "kafka"] = "fifo"
    kafka: FlowsKafka | None = None
    image: Image = "python:3.12-alpine"
    metrics_port: int = Field(9102, ge=1024, le=65535)
    top_k: FlowTopK = FlowTopK()
    # name -> CIDRs; the longest prefix wins; unmatched addresses are "other". At most 32 names
    # (network pairs are exported without eviction: at most (names + 1)^2 series per metric).
    networks: dict[NetName, list[Annotated[str, AfterValidator(_cidr)]]] = Field(default_factory=dict, max_length=32)
    idle_seconds: int = Field(900, ge=60, le=86400)  # keys unseen this long free their slot
    names: FlowNames = FlowNames()
    fifo: Path = Path("/run/flows/goflow2.fifo")  # on a memory emptyDir shared by both containers

    @model_validator(mode="after")
    def _transport_has_its_section(self):
        if self.transport == "kafka" and self.kafka is None:
            raise ValueError("transport is kafka but there is no flows.kafka section: give at least "
                             "flows.kafka.brokers and flows.kafka.image")
        if self.transport == "kafka" and not self.enabled:
            raise ValueError("transport is kafka but flows.enabled is false: the transport carries flows to "
                             "the aggregators; enable them or drop the transport")
        return self

    @field_validator("fifo")
    @classmethod
    def _fifo(cls, v: Path):
        if not v.is_absolute() or v.parent == Path("/") or not re.fullmatch(r"[A-Za-z0-9/._-]+", str(v)):
            raise ValueError(f"{str(v)!r} must be an absolute path below a directory (e.g. /run/flows/goflow2.fifo)")
        return v


class PromFile(_Model):
    config_path: Path
    reload_url: HttpUrl | None = None  # default: prometheus.url + /-/reload
    kubernetes_sd_kubeconfig: Path | None = None  # Prometheus outside the cluster needs one
    # Debian's prometheus package (2.42.0+ds) is built WITHOUT kubernetes_sd_configs; with
    # "file_sd" the pipeline lists the pods itself and writes file_sd target files instead.
    discovery: Literal["kubernetes", "file_sd"] = "kubernetes"
    file_sd_dir: Path | None = None  # default: <config_path's directory>/netviz-targets
    # the netviz alert rules, named in the config's rule_files (absolute: Prometheus reads it too)
    rules_path: Path | None = None  # default: <config_path's directory>/netviz-alerts.yml

    _files = field_validator("config_path")(_readable_file)

    @field_validator("kubernetes_sd_kubeconfig", "file_sd_dir", "rules_path")
    @classmethod
    def _absolute(cls, v: Path | None):
        if v is not None and not v.is_absolute():
            raise ValueError(f"{str(v)!r} is not an absolute path (Prometheus reads it, not us)")
        return v

    @model_validator(mode="after")
    def _rules_not_the_config(self):
        if self.rules_file == self.config_path:  # writing the rules would replace the config
            raise ValueError("rules_path is config_path: name another file for the alert rules "
                             "(default: netviz-alerts.yml next to the config)")
        return self

    @property
    def targets_dir(self) -> Path:
        return self.file_sd_dir or self.config_path.parent / "netviz-targets"

    @property
    def rules_file(self) -> Path:
        return self.rules_path or self.config_path.parent / "netviz-alerts.yml"


class PromChart(_Model):
    configmap_namespace: K8sName
    configmap_name: K8sName
    key: str = "prometheus.yml"


class PromOperator(_Model):
    namespace: K8sName | None = None  # None: each monitor lives next to its workload
    labels: dict[LabelKey, LabelValue] = {}  # what the Prometheus CR's monitor selectors match


class Prometheus(_Model):
    url: HttpUrl
    # "auto" or a mode in targets.registry.MODES: checked after parsing (loading.py), where the modes
    # are registered, so adding one touches no line here
    mode: Annotated[str, _matching(re.compile(r"[a-z][a-z0-9_-]{0,30}"), "a Prometheus mode name")] = "auto"
    # Set on the netviz jobs themselves: the chart's global default (1 min) would leave a fresh deploy
    # without two samples (what increase() needs) for minutes, and detection slow.
    scrape_interval_seconds: int = Field(15, ge=1, le=300)
    # an alert's `for` by name (render/alerts.py has the defaults, e.g. NetvizCollectorDown 2 min);
    # names are checked after parsing (loading.py), where the alerts are known
    alert_for_seconds: dict[Annotated[str, _matching(re.compile(r"Netviz[A-Za-z]{1,60}"), "a Netviz* alert name")],
                            Annotated[int, Field(ge=0, le=86400)]] = {}
    file: PromFile | None = None
    chart: PromChart | None = None
    operator: PromOperator | None = None

    @property
    def reload_url(self) -> str:
        return str((self.file and self.file.reload_url) or url_join(self.url, "-/reload"))


class Grafana(_Model):
    dashboards_namespace: K8sName = "monitoring"
    sidecar_label_key: LabelKey = "grafana_dashboard"
    sidecar_label_value: LabelValue = "1"
    url: HttpUrl | None = None
    token_env: EnvName | None = None
    token_file: Path | None = None

    _files = field_validator("token_file")(_readable_file)
    _env = field_validator("token_env")(_env_is_set)

    @model_validator(mode="after")
    def _one_token(self):
        if self.token_env and self.token_file:
            raise ValueError("set only one of token_env or token_file")
        return self


class Timeouts(_Model):
    """softflowd `-t` timeouts in seconds. Upstream defaults (tcp.fin 300, expint 60, maxlife 7 days)
    export a finished connection minutes late; these export it within ~2 s and report long flows
    every minute, so dashboards and the canary check see traffic in seconds."""

    maxlife: int = Field(60, ge=0, le=604800)  # long flows are cut and exported every minute
    expint: int = Field(1, ge=0, le=3600)  # scan for expired flows every second
    tcp_fin: int = Field(1, ge=0, le=604800)  # closed TCP connection: export right away
    tcp_rst: int = Field(1, ge=0, le=604800)
    tcp: int = Field(300, ge=0, le=604800)  # idle open TCP connection (maxlife still reports it)
    udp: int = Field(15, ge=0, le=604800)  # UDP has no end marker: idle 15 s = done
    icmp: int = Field(5, ge=0, le=604800)
    general: int = Field(60, ge=0, le=604800)


# Building blocks of a router platform's own settings section (routers/<platform>.py, e.g. `opnsense:`),
# which routers.registry validates after parsing with the same context (check_host) and error paths.
PlatformSection = _Model
readable_file = _readable_file
env_is_set = _env_is_set


class Router(_Model):
    """One router. Keys other than these fields are its platform's section (e.g. `opnsense:`), kept here as
    raw data: routers.registry.apply_rules (run by loading.parse/load) refuses unknown keys and platforms,
    validates each section with its platform's model, applies the platform's rules and puts the typed
    section in place (a platform reads it with `Platform.section_of`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: K8sName
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: Annotated[str, _matching(_USER, "a plain user name")] = "root"
    platform: str = "auto"  # or a name in routers.registry.PLATFORMS (checked there)
    ssh_key_file: Path
    known_hosts_file: Path  # required: host keys are verified, never auto-accepted
    # "auto": pfSense/OPNsense -> their `lan` interface; Linux/FreeBSD -> the interface holding
    # lan_address (the router's LAN-side address). Otherwise the name (pfSense/OPNsense: lan, optN).
    interface: IfName = "auto"
    lan_address: IPLiteral | None = None
    collector_address: IPLiteral | None = None  # default: cluster.node_address
    collector_port: int | None = Field(None, ge=1, le=65535)  # default: goflow2.netflow_node_port
    netflow_version: Literal[5, 9, 10] = 9
    timeouts: Timeouts = Timeouts()

    _files = field_validator("ssh_key_file", "known_hosts_file")(_readable_file)
    _key_mode = field_validator("ssh_key_file")(_private_key_file)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str):
        try:
            return _ip_literal(v)
        except ValueError:
            if _HOSTNAME.fullmatch(v):
                return v
        raise ValueError(f"{v!r} is not an IP address or DNS host name")


class Freshness(_Model):
    netflow_max_age_seconds: int = Field(180, ge=10)  # per exporter: last NetFlow datagram seen
    caretta_max_age_seconds: int = Field(120, ge=10)  # last caretta poll scraped


class CanaryPod(_Model):
    """Run the canary command inside a pod (through the API's exec) instead of on the pipeline's host."""
    namespace: K8sName
    label_selector: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9=,!._/ -]+$")]
    container: K8sName | None = None


class Checks(_Model):
    canary_command: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    canary_pod: CanaryPod | None = None
    # The canary's traffic as a router sees it: the check waits for this top-talker pair to grow.
    canary_source: IPLiteral | None = None
    canary_destination: IPLiteral | None = None
    deadline_seconds: int = Field(60, ge=5, le=3600)  # canary traffic must show up within this
    freshness: Freshness = Freshness()

    @model_validator(mode="after")
    def _canary_complete(self):
        if self.canary_command and not (self.canary_source and self.canary_destination):
            raise ValueError("canary_command needs canary_source and canary_destination (the addresses a router "
                             "sees for the canary's traffic) so the check knows which flow to wait for")
        if self.canary_pod and not self.canary_command:
            raise ValueError("canary_pod needs canary_command (what to run in the pod)")
        return self

    @field_validator("canary_command")
    @classmethod
    def _no_nul(cls, v):
        if v and any("\x00" in a for a in v):
            raise ValueError("arguments must not contain NUL bytes")
        return v


class Healing(_Model):
    """How the health sensor re-runs the step that owns a failure (remediation.Policy): at most
    `max_attempts` per incident, spaced by a back-off that doubles from `backoff_seconds`; an incident
    ends after `settle_seconds` healthy (a failure before then is the same incident: a flapping exporter
    cannot cause a storm of runs)."""
    max_attempts: int = Field(3, ge=0, le=20)  # 0: observe and notify, never re-run
    backoff_seconds: float = Field(120, ge=0, le=86400)
    backoff_max_seconds: float = Field(3600, ge=0, le=86400)
    settle_seconds: float = Field(600, ge=0, le=86400)

    @model_validator(mode="after")
    def _max_not_below_first(self):
        if self.backoff_max_seconds < self.backoff_seconds:
            raise ValueError("backoff_max_seconds is below backoff_seconds: raise it or lower backoff_seconds")
        return self


class Ownership(_Model):
    on_foreign_manager: Literal["skip", "adopt"] = "skip"  # objects another tool (Helm, ...) manages


class Notify(_Model):
    """Chat notifications (Slack-compatible incoming webhook, see notify.py). A webhook URL carries its
    token, so only the name of the environment variable holding it is written here."""

    webhook_url_env: EnvName | None = None  # None: notifications off
    timeout_seconds: float = Field(5, gt=0, le=60)  # per attempt; the sensors must not stall on a slow receiver
    # all sends of one sensor tick together (Dagster ends a tick after 60 s and loses its cursor); what
    # does not fit waits for the next tick
    send_budget_seconds: float = Field(10, ge=1, le=40)
    dagster_url: HttpUrl | None = None  # the Dagster UI, for links in messages

    _env = field_validator("webhook_url_env")(_env_is_set)


class Settings(_Model):
    cluster: Cluster
    caretta: Caretta = Caretta()
    goflow2: GoFlow2 = GoFlow2()
    flows: Flows = Flows()
    prometheus: Prometheus
    grafana: Grafana = Grafana()
    routers: list[Router] = []
    checks: Checks = Checks()
    healing: Healing = Healing()
    ownership: Ownership = Ownership()
    notify: Notify = Notify()

    @model_validator(mode="after")
    def _flows_transport(self):
        if self.flows.enabled and self.goflow2.flows_file is not None:
            raise ValueError("goflow2.flows_file and flows.enabled both claim GoFlow2's output: with the flow "
                             "aggregator GoFlow2 writes to flows.fifo; unset goflow2.flows_file or set "
                             "flows.enabled: false")
        if self.flows.enabled and self.flows.metrics_port in (self.goflow2.metrics_port, self.goflow2.netflow_port):
            raise ValueError(f"flows.metrics_port {self.flows.metrics_port} collides with a GoFlow2 port")
        return self

    @model_validator(mode="after")
    def _namespaces_apart(self):
        """A namespace named here gets a Role for the pipeline, and Caretta's and GoFlow2's get Pod
        Security labels from `admin apply`. So none may be a system namespace, and Caretta's (labelled
        privileged) may hold nothing else: sharing it would let every other step's pods run privileged
        (and a canary's exec would reach Caretta's privileged pods)."""
        named = {"caretta.namespace": self.caretta.namespace, "goflow2.namespace": self.goflow2.namespace,
                 "grafana.dashboards_namespace": self.grafana.dashboards_namespace}
        p, canary = self.prometheus, self.checks.canary_pod
        if p.chart:
            named["prometheus.chart.configmap_namespace"] = p.chart.configmap_namespace
        if p.operator and p.operator.namespace:
            named["prometheus.operator.namespace"] = p.operator.namespace
        if canary:
            named["checks.canary_pod.namespace"] = canary.namespace
        relabelled = ("caretta.namespace", "goflow2.namespace")
        problems = [f"{field}: {ns!r} is a system namespace, where netviz must hold no Role"
                    + (" nor relabel Pod Security" if field in relabelled else "") + ": use one of its own"
                    for field, ns in named.items() if ns in SYSTEM_NAMESPACES]
        problems += [f"{field}: 'default' holds everyone's unlabelled workloads; `admin apply` would relabel its "
                     "Pod Security: use one of its own" for field in relabelled if named[field] == "default"]
        problems += [f"{field}: {ns!r} is caretta.namespace, which Pod Security lets run privileged pods: "
                     f"give {field} a namespace of its own"
                     for field, ns in named.items() if field != "caretta.namespace" and ns == self.caretta.namespace]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _windows_hold_two_scrapes(self):
        """increase() over a window needs two samples in it: a shorter window never sees data."""
        every = self.prometheus.scrape_interval_seconds
        short = [f"checks.freshness.{k} ({v}s)" for k, v in (
            ("netflow_max_age_seconds", self.checks.freshness.netflow_max_age_seconds),
            ("caretta_max_age_seconds", self.checks.freshness.caretta_max_age_seconds)) if v < 2 * every]
        if short:
            raise ValueError(f"{' and '.join(short)} must be at least twice prometheus.scrape_interval_seconds "
                             f"({every}s), or the check never sees two samples: raise the window to "
                             f"{2 * every}s or lower the scrape interval")
        return self

    @model_validator(mode="after")
    def _unique_routers(self):
        if dup := _repeated([r.name for r in self.routers]):
            raise ValueError(f"routers: names must be unique; repeated: {', '.join(dup)}: rename all but one")
        return self

    @model_validator(mode="after")
    def _routers_follow_a_moving_collector(self):
        """With standby nodes the collector moves, and each router's softflowd follows it: a fixed
        collector_address would keep sending to the node that was lost."""
        if self.cluster.standby_node_addresses:
            fixed = [f"routers[{i}].collector_address" for i, r in enumerate(self.routers) if r.collector_address]
            if fixed:
                raise ValueError(f"{', '.join(fixed)} cannot be set with cluster.standby_node_addresses: routers "
                                 "follow the collector to whichever node it runs on; remove collector_address "
                                 "(or the standbys)")
        return self

    def with_collector_at(self, address: str) -> "Settings":
        """These settings with the collector placed on the node at `address` (placement.py): what the
        routers converge to while GoFlow2 runs on a standby node."""
        return self.model_copy(update={"cluster": self.cluster.model_copy(update={"node_address": address})})

    def collector(self, router: Router) -> tuple[str, int]:
        """Where this router sends NetFlow: its own override or the cluster NodePort."""
        return (router.collector_address or self.cluster.node_address,
                router.collector_port or self.goflow2.netflow_node_port)

    def redacted(self) -> dict:
        """JSON-safe view for Dagster metadata. Secrets are never stored here (only env var names
        and file paths), so this only marks those references as references."""
        data = self.model_dump(mode="json")
        g = data["grafana"]
        for k in ("token_env", "token_file"):
            g[k] = g[k] and f"<ref {g[k]}>"
        for r, router in zip(data["routers"], self.routers):
            for key in router.model_extra or {}:  # platform sections (e.g. opnsense): their *_env references
                section = r.get(key)
                if isinstance(section, dict):
                    section.update({k: f"<ref {v}>" for k, v in section.items() if k.endswith("_env") and v})
        n = data["notify"]
        n["webhook_url_env"] = n["webhook_url_env"] and f"<ref {n['webhook_url_env']}>"
        return data


# ---------------------------------------------------------------- loading and error formatting
_HINTS = {"missing": "required: add it"}
_SECRETISH = re.compile(r"token|password|secret|api_?key|passphrase", re.I)


def _loc(loc: tuple) -> str:
    """routers[0].interface; a key that would break the one `path: problem` line (empty, blanks, control
    characters: an unknown key is the user's own text) is quoted: flows['a\\nb'], ['']."""
    out = ""
    for part in loc:
        part = part if isinstance(part, int) else str(part)
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part or not part.isprintable() or any(c.isspace() for c in part):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _model_at(loc: tuple, root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The pydantic model that owns the last element of loc (to list allowed keys), from `root` (Settings)."""
    model: Any = root or Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            cand = getattr(cand, "__args__", (cand,))[0] if getattr(cand, "__origin__", None) is list else cand
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


# pydantic's own steps in a location (e.g. "function-after[check(), str]"); only these are dropped: a user's
# key that merely starts with "function-" or "lax-" is a location too
_PYDANTIC_STEP = re.compile(r"(function-(after|before|wrap|plain)|lax-or-strict)\[.*\]", re.S)


_FIELD_PATH = re.compile(r"([a-z_]+)(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*")


def _names_its_field(msg: str) -> bool:
    """`msg` starts with a settings path ("goflow2.namespace: ...")."""
    m = _FIELD_PATH.match(msg)
    return bool(m) and msg[m.end():].startswith(": ") and m.group(1) in Settings.model_fields


def unknown_key(loc: tuple, allowed: list[str] | None) -> str:
    """The `path: problem` line for a key no model knows (`allowed`: the keys that would be)."""
    key = str(loc[-1]) if loc else "?"
    listed = ", ".join(allowed) if allowed is not None else "see the documentation"
    if _SECRETISH.search(key):
        return (f"{_loc(loc)}: inline secrets are not accepted: reference them by environment variable "
                f"name or file path (allowed keys: {listed})")
    return f"{_loc(loc)}: unknown key: remove it or fix the spelling (allowed keys: {listed})"


def _format(err: dict, at: tuple = (), root: type[BaseModel] | None = None) -> str:
    """One pydantic error as a `path: problem` line; `root`: the model validated (Settings), at `at`."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _PYDANTIC_STEP.fullmatch(p)))
    path, kind = _loc(at + loc), err["type"]
    if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: a non-string key where extras are allowed
        model = _model_at(loc, root)
        allowed = list(model.model_fields) if model else None
        if allowed is not None and model.model_config.get("extra") == "allow":
            allowed.append("or the section of the router's platform")
        return unknown_key(at + loc, allowed)
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return f"{path}: {_HINTS['missing']}"
    if not at and not loc and _names_its_field(msg):  # a whole-document check that names the field it refuses
        return msg
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than", "int_parsing",
                "literal_error", "bool_parsing", "too_short", "string_type", "int_type"):
        msg += f" (got {err.get('input')!r})"
    return f"{path}: {msg}"


def format_errors(e: ValidationError, at: tuple = (), root: type[BaseModel] | None = None) -> list[str]:
    """A ValidationError of `root` (default Settings), validated at location `at` of the settings (e.g.
    ("routers", 0, "opnsense") for a platform section), as `path: problem` lines."""
    return [_format(err, at, root) for err in e.errors()]


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_settings(data: Any, *, check_host: bool = True, source: str = "settings") -> Settings:
    """Validate already-parsed data, this module's rules only (the pure layer: routers' platforms and their
    sections are checked by loading.parse, which the pipeline uses). check_host=False skips file/env
    existence checks (for import-time use, e.g. building partitions, on a machine that will not run the
    assets)."""
    if not isinstance(data, dict):
        raise SettingsError(["(top level): must be a mapping of sections (cluster, prometheus, ...)"], source)
    try:
        return Settings.model_validate(data, context=validation_context(check_host))
    except ValidationError as e:
        raise SettingsError(format_errors(e), source) from None


def validation_context(check_host: bool = True) -> dict:
    """The pydantic context settings models are validated with (also a platform's section's)."""
    return {"skip_host_checks": not check_host}


def load_settings(path: str | os.PathLike | None = None, *, check_host: bool = True) -> Settings:
    """Load and validate the settings file (argument, else env NETVIZ_CONFIG), this module's rules only
    (see parse_settings; the pipeline uses loading.load)."""
    data, source = read_settings(path)
    return parse_settings(data, check_host=check_host, source=source)


def read_settings(path: str | os.PathLike | None = None) -> tuple[Any, str]:
    """The settings file's YAML (argument, else env NETVIZ_CONFIG), duplicate keys refused, and its name."""
    path = path or os.environ.get(ENV_VAR)
    if not path:
        raise SettingsError([f"{ENV_VAR}: not set: point it at the settings YAML file"])
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SettingsError([f"{p}: cannot read ({e.strerror}): fix {ENV_VAR} or the file"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        raise SettingsError([f"not valid YAML: {e}"], str(p)) from None
    return data, str(p)
