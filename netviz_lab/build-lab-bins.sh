#!/usr/bin/env bash
# Builds the lab's Go binaries from the Go module proxy into a cache keyed by version:
#   $NETVIZ_LAB_CACHE/bin/<tool>-<version>  (default cache: /var/cache/netviz-lab)
# Idempotent: a binary already in the cache is not rebuilt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
. "$here/versions.env"
cache=${NETVIZ_LAB_CACHE:-/var/cache/netviz-lab}
bin=$cache/bin
mkdir -p "$bin" "$cache/src"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

have() { [ -x "$bin/$1" ]; }

# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the staging modules with local
# paths. A small module of our own requires it and replaces each staging module with its published
# v0.<minor>.<patch> version instead; etcd's server is built from the same graph so versions agree.
build_k8s() {
  local v=$KUBERNETES_VERSION tools="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
  local missing=0 t
  for t in $tools etcd; do have "$t-$v" || have "etcd-$ETCD_VERSION" || missing=1; done
  for t in $tools; do have "$t-$v" || missing=1; done
  have "etcd-$ETCD_VERSION" || missing=1
  [ $missing = 1 ] || return 0
  local mod=$cache/src/k8s-$v staging=v0.${v#v1.}
  mkdir -p "$mod"
  local kmod
  kmod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  {
    echo "module netviz.local/k8sbuild"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging"'#p' "$kmod"
  } >"$mod/go.mod"
  (cd "$mod" && go mod download k8s.io/kubernetes >/dev/null 2>&1 || true)
  for t in $tools; do
    have "$t-$v" && continue
    echo "building $t $v (cold builds take minutes)" >&2
    (cd "$mod" && go get "k8s.io/kubernetes/cmd/$t@$v" >/dev/null && \
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitVersion=$v" \
        -o "$bin/$t-$v.tmp" "k8s.io/kubernetes/cmd/$t")
    mv "$bin/$t-$v.tmp" "$bin/$t-$v"
  done
  if ! have "etcd-$ETCD_VERSION"; then
    echo "building etcd $ETCD_VERSION" >&2
    (cd "$mod" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null && \
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/etcd-$ETCD_VERSION.tmp" go.etcd.io/etcd/server/v3)
    mv "$bin/etcd-$ETCD_VERSION.tmp" "$bin/etcd-$ETCD_VERSION"
  fi
}

# Modules without replace directives install directly.
go_install() { # tool version package
  have "$1-$2" && return 0
  echo "building $1 $2" >&2
  local tmp
  tmp=$(mktemp -d)
  GOBIN=$tmp CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$3@$2"
  mv "$tmp/$1" "$bin/$1-$2"
  rm -rf "$tmp"
}

# Prometheus v3: module version v0.3xx.y is release 3.xx.y; stamp it so /api/v1/status/buildinfo says so.
build_prometheus() {
  local v=$PROMETHEUS_VERSION t
  local minor=${v#v0.3} release
  release="3.$((10#${minor%%.*})).${v##*.}"
  for t in prometheus promtool; do
    have "$t-$v" && continue
    echo "building $t $release ($v)" >&2
    local tmp
    tmp=$(mktemp -d)
    GOBIN=$tmp CGO_ENABLED=0 go install -trimpath -ldflags "-s -w \
      -X github.com/prometheus/common/version.Version=$release \
      -X github.com/prometheus/common/version.Branch=release \
      -X github.com/prometheus/common/version.Revision=$v" \
      "github.com/prometheus/prometheus/cmd/$t@$v"
    mv "$tmp/$t" "$bin/$t-$v"
    rm -rf "$tmp"
  done
}

# The Operator's go.mod replaces two of its own submodules with local paths, so (like Kubernetes) a small
# module of ours requires it and replaces them with their published versions.
build_prometheus_operator() {
  local v=$PROMETHEUS_OPERATOR_VERSION t
  have "prometheus-operator-$v" && have "prometheus-config-reloader-$v" && return 0
  local mod=$cache/src/prometheus-operator-$v m=github.com/prometheus-operator/prometheus-operator
  mkdir -p "$mod"
  printf 'module netviz.local/promopbuild\n\ngo 1.24.0\n\nrequire %s %s\n\nreplace %s/pkg/apis/monitoring => %s/pkg/apis/monitoring %s\n\nreplace %s/pkg/client => %s/pkg/client %s\n' \
    "$m" "$v" "$m" "$m" "$v" "$m" "$m" "$v" >"$mod/go.mod"
  for t in operator prometheus-config-reloader; do
    local out=$t-$v
    [ "$t" = operator ] && out=prometheus-operator-$v
    have "$out" && continue
    echo "building $out" >&2
    (cd "$mod" && go get "$m/cmd/$t@$v" >/dev/null && \
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=${v#v}" \
        -o "$bin/$out.tmp" "$m/cmd/$t")
    mv "$bin/$out.tmp" "$bin/$out"
  done
}

# The Operator's CRDs and its example RBAC for itself and for a Prometheus, at the same version (the lab
# serves monitoring.coreos.com from them and runs the Operator as its project ships it).
operator_manifests() {
  local v=$PROMETHEUS_OPERATOR_VERSION dir=$cache/lib/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION
  [ -s "$dir/crds/monitoring.coreos.com_prometheuses.yaml" ] && [ -s "$dir/rbac-prometheus/prometheus-cluster-role.yaml" ] && return 0
  local src
  src=$(cd "$cache/src" && \
    go mod download -json "github.com/prometheus-operator/prometheus-operator@$v" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/crds" "$dir.tmp/rbac-operator" "$dir.tmp/rbac-prometheus"
  cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml "$dir.tmp/crds/"
  cp "$src"/example/rbac/prometheus-operator/*.yaml "$dir.tmp/rbac-operator/"
  cp "$src"/example/rbac/prometheus/prometheus-*.yaml "$dir.tmp/rbac-prometheus/"
  chmod -R u+w,go-w "$dir.tmp" && chmod 644 "$dir.tmp"/*/*.yaml
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

go_install goflow2 "$GOFLOW2_VERSION" github.com/netsampler/goflow2/v2/cmd/goflow2
go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
build_k8s
build_prometheus
build_prometheus_operator
operator_manifests
ls -l "$bin"
